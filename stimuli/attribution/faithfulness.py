"""Faithfulness of attribution maps, per image (so that the analysis can ask whether they
predict human utility): deletion and insertion (Petsiuk et al. 2018) and MuFidelity (Bhatt
et al. 2020). Removed pixels take a grey baseline (0.5), as occlusion's patches do; scores
are the model's probability of the target class.

Letters: N images, C channels, H, W, T steps, M subsets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BASELINE = 0.5


def _check(x: torch.Tensor, maps: torch.Tensor) -> None:
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not match inputs "
                         f"{tuple(x.shape)}: expected (N, H, W)")


@torch.no_grad()
def _probabilities(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   batch: int = 512) -> torch.Tensor:
    """p(target) for inputs (N, T, C, H, W) with target (N,) -> (N, T)."""
    n, t = x.shape[:2]
    flat = x.flatten(0, 1)
    device = next(model.parameters(), torch.empty(0)).device
    p = torch.cat([model(flat[i:i + batch].to(device)).softmax(dim=1).cpu()
                   for i in range(0, len(flat), batch)]).view(n, t, -1)
    return p.gather(2, target.cpu().view(n, 1, 1).expand(n, t, 1))[..., 0]


def _curve(model, x, target, maps, steps: int, insert: bool) -> np.ndarray:
    _check(x, maps)
    x = x.detach().cpu().float()
    n, _, h, w = x.shape
    order = maps.detach().cpu().flatten(1).argsort(dim=1, descending=True)  # N, HW
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w).expand(n, -1))
    shown = torch.linspace(0, h * w, steps + 1).round()  # T: pixels changed at each step
    changed = (rank[:, None, :] < shown[None, :, None]).view(n, steps + 1, 1, h, w)
    keep = changed if insert else ~changed
    probe = torch.where(keep, x[:, None], torch.full_like(x[:, None], BASELINE))
    p = _probabilities(model, probe, target)  # N, T
    return torch.trapezoid(p, dx=1.0 / steps, dim=1).numpy()


def deletion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
             steps: int = 16) -> np.ndarray:
    """(N,) area under p(target) as the map's most important pixels are greyed out first:
    lower is more faithful."""
    return _curve(model, x, target, maps, steps, insert=False)


def insertion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
              steps: int = 16) -> np.ndarray:
    """(N,) area under p(target) as the map's most important pixels are put back first
    onto grey: higher is more faithful."""
    return _curve(model, x, target, maps, steps, insert=True)


def mufidelity(model: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
               n: int = 64, seed: int = 0, cells: int = 8, removed: float = 0.2) -> np.ndarray:
    """(N,) Pearson correlation, over n random subsets of pixels (coarse grid cells, each
    removed with probability ``removed``), between the map's sum over a subset and the drop
    in p(target) when the subset is greyed out: higher is more faithful."""
    _check(x, maps)
    if n < 2:
        raise ValueError(f"mufidelity: n must be at least 2, got {n}")
    x = x.detach().cpu().float()
    _, _, h, w = x.shape
    generator = torch.Generator().manual_seed(seed)
    grid = (torch.rand(n, 1, cells, cells, generator=generator) < removed).float()
    subsets = F.interpolate(grid, size=(h, w), mode="nearest")[:, 0].bool()  # M, H, W
    probe = torch.where(subsets[None, :, None], torch.full_like(x[:, None], BASELINE),
                        x[:, None])  # N, M, C, H, W
    full = _probabilities(model, x[:, None], target)  # N, 1
    drop = full - _probabilities(model, probe, target)  # N, M
    mass = (maps.detach().cpu()[:, None] * subsets[None]).flatten(2).sum(dim=2)  # N, M
    a, b = drop - drop.mean(dim=1, keepdim=True), mass - mass.mean(dim=1, keepdim=True)
    denom = (a.square().sum(dim=1) * b.square().sum(dim=1)).sqrt()
    corr = torch.where(denom > 0, (a * b).sum(dim=1) / denom.clamp(min=1e-12),
                       torch.zeros_like(denom))
    return corr.numpy()
