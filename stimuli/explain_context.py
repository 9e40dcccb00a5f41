"""What a build hands to explanation methods: the model, the fitted unit sources, each unit
family's natural extremes, and a place to put the images a method shows.

Letters: U units, k extremes per unit, R images of the scored subset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from stimuli.images import ImageSource, ImageTransform
from stimuli.sources.base import UnitSource
from stimuli.stimulus_set import ImageRef, image_digest, rounded


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
    """Shared by the methods of one build; ``images`` collects the PNGs they name, and
    ``explained`` the roles each method gave each unit (methods that build on another's,
    such as accentuations of the natural references, read it)."""

    model: nn.Module
    device: torch.device
    sources: dict[tuple[str, str], UnitSource]  # (layer, source id) -> fitted source
    statistics: dict[tuple[str, str], UnitStatistics]
    render: Callable[[int], bytes]  # pool image index -> the PNG a participant sees
    image_name: Callable[[int], str]  # pool image index -> its name (file path, dataset[i])
    display: Callable[[Image.Image], bytes]  # a synthetic image -> its PNG, shown as naturals
    pool: ImageSource  # the image pool the extremes come from
    transform: ImageTransform  # the model's input: size, colour mode, normalization
    inputs: Callable[[Sequence[int]], torch.Tensor]  # pool indices -> model inputs (N, C, S, S)
    pooling: str = "mean"  # how unit maps are pooled into one activation
    cls_token: bool = True
    seed: int = 0
    cache_dir: Path = Path(".")
    images: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # digest -> pool image name
    indices: dict[str, int] = field(default_factory=dict)  # digest -> pool image index
    explained: dict[str, dict[str, dict]] = field(default_factory=dict)  # method -> unit -> roles
    provenance: dict[str, dict] = field(default_factory=dict)  # method -> what it used
    _rendered: dict[int, str] = field(default_factory=dict)

    def natural(self, index: int, activation: float | None = None) -> ImageRef:
        """A pool image as shown to participants, with the activation it reached."""
        if index not in self._rendered:
            digest = self.add_png(self.render(index))
            self._rendered[index] = digest
            self.names[digest] = self.image_name(index)
            self.indices[digest] = index
        value = None if activation is None else rounded(activation)
        return ImageRef(image=self._rendered[index], activation=value)

    def pixels(self, indices: Sequence[int]) -> torch.Tensor:
        """Pool images as the model sees them, in pixel space [0, 1] (N, C, S, S)."""
        x = self.inputs(indices)
        mean = torch.tensor(self.transform.mean)[:, None, None]
        std = torch.tensor(self.transform.std)[:, None, None]
        return (x * std + mean).clamp(0, 1)

    def add_pixels(self, pixels: torch.Tensor) -> str:
        """Register a synthetic image (C, S, S) in [0, 1], shown at the size of the natural
        images; returns its digest."""
        array = (pixels.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(array[0] if len(array) == 1 else array.transpose(1, 2, 0))
        return self.add_png(self.display(image))

    def add_png(self, data: bytes) -> str:
        """Register PNG bytes (a synthetic image, a map); returns their digest."""
        digest = image_digest(data)
        self.images[digest] = data
        return digest
