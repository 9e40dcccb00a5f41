"""A corpus of one-shot categories: drawings (or rendered reference variants) per category,
split into background categories (everything is trained on these) and evaluation
categories (held out: exemplars to draw from, critics evaluated on them).

Letters: N drawings, S side in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["background", "evaluation"]


@dataclass(frozen=True)
class Category:
    id: str  # unique in the corpus, e.g. "greek/alpha" (alphabet/character)
    alphabet: str  # the split is by alphabet, so no character leaks across it
    split: Split


@dataclass(frozen=True)
class DrawingCorpus:
    """``images`` uint8 (N, S, S), ink 255 on paper 0; ``labels`` int64 (N,) index into
    ``categories``; ``drawers`` int64 (N,): which drawer (a person, or a rendering style)
    made each drawing. ``human`` says whether the drawings are people's (Omniglot,
    QuickDraw-FS) or rendered reference variants (Hershey fonts)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    drawers: np.ndarray
    categories: tuple[Category, ...]
    human: bool

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def split(self, which: Split) -> DrawingCorpus:
        """The drawings of the background or the evaluation categories (labels re-indexed
        into the sub-corpus's own categories)."""
        keep = [i for i, c in enumerate(self.categories) if c.split == which]
        remap = np.full(len(self.categories), -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        rows = np.isin(self.labels, keep)
        return DrawingCorpus(
            name=f"{self.name}:{which}", images=self.images[rows],
            labels=remap[self.labels[rows]], drawers=self.drawers[rows],
            categories=tuple(self.categories[i] for i in keep), human=self.human)
