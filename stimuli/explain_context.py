"""What a build hands to explanation methods: the model, the fitted unit sources, each unit
family's natural extremes, and a place to put the images a method shows.

Letters: U units, k extremes per unit, R images of the scored subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from stimuli.sources.base import UnitSource
from stimuli.stimulus_set import ImageRef, image_digest


@dataclass(frozen=True)
class UnitStatistics:
    """A unit family's most and least activating images over the pool, from one streaming
    pass: ``top_*`` / ``bottom_*`` (U, k), most extreme first; ``subset_scores`` (R, U) are
    the scores of the images ``subset_index`` (R,), for percentile ("hard") queries."""

    top_values: torch.Tensor
    top_indices: torch.Tensor
    bottom_values: torch.Tensor
    bottom_indices: torch.Tensor
    subset_index: torch.Tensor
    subset_scores: torch.Tensor

    @property
    def n_units(self) -> int:
        return int(self.top_values.shape[0])

    def usable(self, unit: int, n: int) -> bool:
        """Whether the unit's extremes are separated: its n-th top score exceeds its n-th
        bottom score (n >= 1), so that 'most' and 'least' activating mean something."""
        n = max(n, 1)
        top, bottom = self.top_values[unit], self.bottom_values[unit]
        return len(top) >= n and bool(top[n - 1] > bottom[n - 1])

    def state(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).cpu() for k in self.__dataclass_fields__}


@dataclass
class ExplainContext:
    """Shared by the methods of one build; ``images`` collects the PNGs they name."""

    model: nn.Module
    device: torch.device
    sources: dict[tuple[str, str], UnitSource]  # (layer, source id) -> fitted source
    statistics: dict[tuple[str, str], UnitStatistics]
    render: Callable[[int], bytes]  # pool image index -> the PNG a participant sees
    image_name: Callable[[int], str]  # pool image index -> its name (file path, dataset[i])
    images: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # digest -> pool image name
    _rendered: dict[int, str] = field(default_factory=dict)

    def natural(self, index: int, activation: float | None = None) -> ImageRef:
        """A pool image as shown to participants, with the activation it reached."""
        if index not in self._rendered:
            digest = self.add_png(self.render(index))
            self._rendered[index] = digest
            self.names[digest] = self.image_name(index)
        value = None if activation is None else float(f"{float(activation):.6g}")
        return ImageRef(image=self._rendered[index], activation=value)

    def add_png(self, data: bytes) -> str:
        """Register PNG bytes (a synthetic image, a map); returns their digest."""
        digest = image_digest(data)
        self.images[digest] = data
        return digest
