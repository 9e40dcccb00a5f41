"""What is explained: a unit source gives the units of a layer and their activations.

A source is a small class with an ``id``, a ``revision`` (bump it when what it computes
changes: its cached work is then recomputed, everyone else's reused), its own pydantic
``Config`` (the build file's ``[<id>]`` table), and, if it is a dictionary, a ``fit`` on
position vectors sampled from the layer. After ``fit`` (or ``load_state``) it maps position
vectors to unit activations with ``encoder()`` (None: the layer's channels themselves).
Letters: M position vectors, C channels, U units, K dictionary atoms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

Encoder = Callable[[torch.Tensor], torch.Tensor]  # (M, C) -> (M, U)


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnitSource:
    """Base class: the units of one layer. Subclasses set the class attributes below."""

    id: ClassVar[str]
    revision: ClassVar[int]
    Config: ClassVar[type[SourceConfig]] = SourceConfig
    description: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False  # fitted on position vectors sampled from the layer
    # The layer a source always explains, whatever the build lists ("" = the model's output),
    # and the name its entries carry there.
    fixed_layer: ClassVar[str | None] = None
    fixed_layer_name: ClassVar[str] = ""

    def __init__(self, config: SourceConfig, *, seed: int, device: torch.device):
        self.config = config
        self.seed = seed
        self.device = device

    def fit(self, X: torch.Tensor) -> None:
        """Learn the units from position vectors X (M, C); only for ``needs_fit`` sources."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what :meth:`state` returned (a cached fit)."""

    def encoder(self) -> Encoder | None:
        """Position vectors (M, C) to unit activations (M, U); None: the channels."""
        return None

    def objective_encoder(self) -> Encoder | None:
        """A differentiable stand-in for :meth:`encoder`, for images optimized to drive a
        unit (feature visualization); None: the channels."""
        return self.encoder()

    def dictionary(self) -> torch.Tensor | None:
        """Atoms (U, C) whose code-weighted sum a unit contributes to the layer; None for
        channels (a neuron's contribution is its own activation map)."""
        return None

    def has_importance(self) -> bool:
        """Whether removing a unit from the layer is meaningful (not for class logits)."""
        return True

    def quality(self) -> dict:
        """Fit diagnostics for the provenance (empty for sources that are not fitted)."""
        return {}

    def checksum(self) -> str:
        """What identifies the fitted units in cache keys."""
        digest = hashlib.sha256(f"{self.id}:{self.revision}".encode())
        for key, value in sorted(self.state().items()):
            if isinstance(value, torch.Tensor):
                digest.update(key.encode() + value.cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
