"""Shortcut datasets: images of two classes defined by two latent features, a *core* one (an
object's shape) and a *shortcut* (a colour patch, or the position of a marker), each with
its own predictivity (how often it agrees with the label) and availability (its contrast
against the background: how easily a model can read it).

After Hermann, Mobahi, Fel and Mozer (ICLR 2024, "On the foundations of shortcut learning"):
a model prefers the more available feature even when it is less predictive, and a hidden
ReLU layer strengthens that preference over a linear model. The utility benchmark's biased
scenario trains a model here, so that its decisions follow a cue people can learn to see.

Layout of an S x S image: the shortcut lives in the top-left quarter square [0, S/2)^2
(the colour patch, or the marker on its left or right half); the shape lies anywhere
outside it, so the two never overlap. Letters: N images, S image side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

GREY = 0.5
DARK = 0.1  # the shape's colour at full availability
COLOURS = ((0.95, 0.1, 0.1), (0.1, 0.2, 0.95))  # the colour shortcut of class 0 / class 1


class ShortcutSpec(BaseModel):
    """What a shortcut dataset is made of (a table of a build file, or a test's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(32, ge=16, le=256)
    shortcut: Literal["colour", "position"] = "colour"
    core_predictivity: float = Field(1.0, ge=0.5, le=1.0)
    shortcut_predictivity: float = Field(0.9, ge=0.5, le=1.0)
    core_availability: float = Field(0.6, gt=0, le=1.0)  # contrast of the shape
    shortcut_availability: float = Field(1.0, gt=0, le=1.0)  # contrast of the patch/marker
    noise: float = Field(0.05, ge=0, le=0.5)  # SD of the pixel noise
    # "random": each feature anywhere in its area; "fixed": always at the same place, so that
    # each feature is one direction in pixel space (the linear setting of Hermann et al.)
    placement: Literal["random", "fixed"] = "random"
    classes: tuple[str, str] = ("A", "B")

    @model_validator(mode="after")
    def _distinct_classes(self) -> ShortcutSpec:
        if self.classes[0] == self.classes[1] or not all(self.classes):
            raise ValueError("classes: two distinct, non-empty names")
        return self


@dataclass(frozen=True)
class ShortcutData:
    """Images (N, 3, S, S) in [0, 1]; labels, the class the core says, the class the
    shortcut says (N,); regions (N, 2, S, S) where the core (0) and the shortcut (1) lie."""

    images: torch.Tensor
    labels: torch.Tensor
    core: torch.Tensor
    shortcut: torch.Tensor
    regions: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def shape_mask(kind: int, side: int) -> np.ndarray:
    """A filled square (class 0) or a plus sign (class 1) of the same extent (side, side)."""
    if kind == 0:
        return np.ones((side, side), bool)
    mask = np.zeros((side, side), bool)
    bar = max(1, side // 3)
    lo = (side - bar) // 2
    mask[lo:lo + bar, :] = True
    mask[:, lo:lo + bar] = True
    return mask


def _agreeing(labels: np.ndarray, predictivity: float, rng: np.random.Generator) -> np.ndarray:
    """Each label kept with probability ``predictivity``, else flipped."""
    flip = rng.random(len(labels)) >= predictivity
    return np.where(flip, 1 - labels, labels)


def make_dataset(spec: ShortcutSpec, n: int, *, seed: int,
                 conflict: bool | None = None) -> ShortcutData:
    """n seeded images. ``conflict=True`` makes the shortcut contradict the core in every
    image, ``False`` agree in every image; ``None`` draws each by its predictivity."""
    if n < 1:
        raise ValueError(f"n: at least one image, not {n}")
    rng = np.random.default_rng(seed)
    s = spec.size
    labels = rng.integers(0, 2, n)
    core = _agreeing(labels, spec.core_predictivity, rng)
    if conflict is None:
        shortcut = _agreeing(labels, spec.shortcut_predictivity, rng)
    else:
        shortcut = 1 - core if conflict else core.copy()
    images = np.full((n, 3, s, s), GREY) + rng.normal(0, spec.noise, (n, 3, s, s))
    regions = np.zeros((n, 2, s, s), bool)
    half, side = s // 2, max(4, s // 4)
    for i in range(n):
        # the shape, anywhere that does not touch the top-left quarter
        while spec.placement == "random":
            y, x = rng.integers(0, s - side + 1, 2)
            if y >= half or x >= half:
                break
        else:
            y = x = (s + half - side) // 2
        mask = np.zeros((s, s), bool)
        mask[y:y + side, x:x + side] = shape_mask(int(core[i]), side)
        images[i][:, mask] += spec.core_availability * (DARK - GREY)
        regions[i, 0] = mask
        # the shortcut, inside the top-left quarter
        mask = np.zeros((s, s), bool)
        if spec.shortcut == "colour":
            patch = max(3, s // 4)
            py, px = (rng.integers(0, half - patch + 1, 2) if spec.placement == "random"
                      else ((half - patch) // 2,) * 2)
            mask[py:py + patch, px:px + patch] = True
            colour = np.array(COLOURS[int(shortcut[i])]) - GREY
            images[i][:, mask] += spec.shortcut_availability * colour[:, None]
        else:
            marker = max(2, s // 8)
            quarter = half // 2
            if spec.placement == "random":
                px = int(shortcut[i]) * quarter + rng.integers(0, quarter - marker + 1)
                py = rng.integers(0, half - marker + 1)
            else:
                px = int(shortcut[i]) * quarter + (quarter - marker) // 2
                py = (half - marker) // 2
            mask[py:py + marker, px:px + marker] = True
            images[i][:, mask] += spec.shortcut_availability * (1.0 - GREY)
        regions[i, 1] = mask
    return ShortcutData(
        images=torch.from_numpy(images.clip(0, 1)).float(),
        labels=torch.from_numpy(labels).long(),
        core=torch.from_numpy(core).long(),
        shortcut=torch.from_numpy(shortcut).long(),
        regions=torch.from_numpy(regions),
    )


def shortcut_bias(predict: Callable[[torch.Tensor], torch.Tensor], spec: ShortcutSpec, *,
                  n: int = 1000, seed: int = 0) -> float:
    """The share of images whose shortcut contradicts their shape on which ``predict``
    (images -> classes) follows the shortcut: 0 reads only the shape, 1 only the shortcut."""
    data = make_dataset(spec, n, seed=seed, conflict=True)
    with torch.no_grad():
        predicted = predict(data.images)
    return float((predicted.cpu() == data.shortcut).float().mean())
