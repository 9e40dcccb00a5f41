"""Views of a drawing for the self-supervised regularizers (SimCLR, Barlow Twins): a small
random affine map plus a smooth, low-frequency displacement field, one warp per drawing.

A smooth warp bends strokes without breaking, thinning or adding them, so both views stay
drawings of the same thing (LatentMatters uses torchvision's affine / perspective / resized
crop for the same purpose; a single batched ``grid_sample`` is far faster on a CPU).
Letters: N drawings, S side in pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ROTATION = math.radians(10)  # largest rotation
SCALE = 0.1  # scale in [1 - SCALE, 1 + SCALE]
SHEAR = 0.1
SHIFT = 0.08  # translation, in half-widths of the image
JITTER = 0.04  # largest displacement of the smooth field, in half-widths
JITTER_GRID = 4  # the field is drawn on a JITTER_GRID^2 grid and upsampled


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of each drawing of ``x`` (N, 1, S, S), float in [0, 1].

    Random numbers come from ``generator`` (on the CPU) so views are reproducible."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"augment expects (N, 1, S, S) drawings, got {tuple(x.shape)}")
    n, size = x.shape[0], x.shape[-1]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1  # in [-1, 1)

    angle, scale = uniform(n) * ROTATION, 1 + uniform(n) * SCALE
    shear, shift = uniform(n) * SHEAR, uniform(n, 2) * SHIFT
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([  # N, 2, 3: output -> input coordinates
        torch.stack([cos, -sin + shear, shift[:, 0]], dim=1),
        torch.stack([sin, cos, shift[:, 1]], dim=1),
    ], dim=1)
    field = uniform(n, 2, JITTER_GRID, JITTER_GRID) * JITTER  # N, 2, g, g
    theta, field = theta.to(x.device), field.to(x.device)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)  # N, S, S, 2
    smooth = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)
    grid = grid + smooth.permute(0, 2, 3, 1)  # N, S, S, 2
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).clamp(0, 1)
