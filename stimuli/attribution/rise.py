"""RISE (Petsiuk et al. 2018): a black-box saliency map, the class's probability averaged
over random masks weighted by the pixels each mask keeps. Captum has no RISE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rise_masks(n: int, side: int, *, cells: int, keep: float,
               generator: torch.Generator) -> torch.Tensor:
    """(n, 1, side, side) smooth masks in [0, 1]: random binary grids of cells x cells
    (each cell kept with probability ``keep``), upsampled bilinearly and shifted at random
    by up to one cell, as in the paper."""
    if not 0 < keep < 1:
        raise ValueError(f"rise: keep must lie in (0, 1), got {keep}")
    if cells < 2 or cells > side:
        raise ValueError(f"rise: cells must lie in [2, {side}], got {cells}")
    cell = -(-side // cells)  # ceil
    grid = (torch.rand(n, 1, cells, cells, generator=generator) < keep).float()
    big = F.interpolate(grid, size=((cells + 1) * cell,) * 2, mode="bilinear",
                        align_corners=False)
    shifts = torch.randint(0, cell, (n, 2), generator=generator)
    return torch.stack([big[i, :, dy:dy + side, dx:dx + side]
                        for i, (dy, dx) in enumerate(shifts.tolist())])


@torch.no_grad()
def rise(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, n_masks: int = 512,
         cells: int = 7, keep: float = 0.5, seed: int = 0, batch: int = 256) -> torch.Tensor:
    """Maps (N, H, W) for inputs (N, C, H, W): sum_m p(target | x * M_m) M_m / (n_masks keep),
    the same masks for every image (seeded)."""
    if n_masks < 1:
        raise ValueError(f"rise: n_masks must be at least 1, got {n_masks}")
    generator = torch.Generator().manual_seed(seed)
    h, w = x.shape[-2:]  # square masks of the longer side, cropped: images need not be square
    masks = rise_masks(n_masks, max(h, w), cells=cells, keep=keep,
                       generator=generator)[..., :h, :w].to(x.device)  # M, 1, H, W
    out = torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)
    for i in range(len(x)):
        for start in range(0, n_masks, batch):
            m = masks[start:start + batch]
            p = model(x[i:i + 1] * m).softmax(dim=1)[:, int(target[i])]  # M
            out[i] += (p[:, None, None] * m[:, 0]).sum(dim=0)
    return out / (n_masks * keep)
