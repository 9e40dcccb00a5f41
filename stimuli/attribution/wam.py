"""The Wavelet Attribution Method (WAM, Kasmi et al. 2025): gradients of the class score
with respect to the image's wavelet coefficients (through ptwt's differentiable wavelet
transform), smoothed over noisy copies as SmoothGrad does, then gathered back to pixels:
each coefficient's absolute gradient spread over the block of pixels it describes, summed
over scales and orientations. Captum has no wavelet domain."""

from __future__ import annotations

import ptwt
import torch
import torch.nn.functional as F
from torch import nn


def wavelet_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                      wavelet: str, levels: int) -> list[torch.Tensor]:
    """Per level, coarse first, the gradients (N, C, h, w) of the target score with respect
    to the approximation and then the summed-magnitude details (three orientations)."""
    coeffs = ptwt.wavedec2(x.detach(), wavelet, level=levels)
    leaves = [coeffs[0].clone().requires_grad_(True)]
    leaves += [d.clone().requires_grad_(True) for level in coeffs[1:] for d in level]
    with torch.enable_grad():
        details = [tuple(leaves[1 + 3 * i:4 + 3 * i]) for i in range(levels)]
        image = ptwt.waverec2((leaves[0], *(ptwt.WaveletDetailTuple2d(*d) for d in details)),
                              wavelet)
        score = model(image[..., :x.shape[-2], :x.shape[-1]]).gather(
            1, target.view(-1, 1)).sum()
        grads = torch.autograd.grad(score, leaves)
    out = [grads[0]]
    for i in range(levels):
        out.append(sum(g.abs() for g in grads[1 + 3 * i:4 + 3 * i]))
    return out


def wam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, wavelet: str = "haar",
        levels: int = 3, n_samples: int = 8, noise: float = 0.1, seed: int = 0,
        signed: bool = False) -> torch.Tensor:
    """Maps (N, H, W) for inputs (N, C, H, W) whose sides are divisible by 2**levels."""
    h, w = x.shape[-2:]
    if levels < 1 or h % 2 ** levels or w % 2 ** levels:
        raise ValueError(f"wam: the image sides ({h}, {w}) must be divisible by 2**levels "
                         f"= {2 ** levels}")
    if n_samples < 1:
        raise ValueError(f"wam: n_samples must be at least 1, got {n_samples}")
    generator = torch.Generator().manual_seed(seed)
    spread = float(x.detach().max() - x.detach().min()) or 1.0
    total = torch.zeros(x.shape[0], h, w, device=x.device)
    for _ in range(n_samples):
        jitter = torch.randn(x.shape, generator=generator).to(x.device) * noise * spread
        per_level = wavelet_gradients(model, x.detach() + jitter, target, wavelet=wavelet,
                                      levels=levels)
        for g in per_level:  # N, C, h', w'
            m = g.sum(dim=1) if signed else g.abs().sum(dim=1)
            total += F.interpolate(m[:, None], size=(h, w), mode="nearest")[:, 0]
    return total / n_samples
