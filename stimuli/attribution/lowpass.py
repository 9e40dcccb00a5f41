"""Low-pass filtered gradients ("Gradient strikes back", Muzellec et al. 2023): the input
gradient of a CNN carries aliasing noise at high spatial frequencies; an ideal low-pass
filter removes it, and the cut-off is chosen per model as the one whose maps are most
faithful on held-out images."""

from __future__ import annotations

import torch
from torch import nn

from stimuli.attribution.faithfulness import deletion, insertion


def lowpass_mask(height: int, width: int, cutoff: float,
                 device: torch.device | None = None) -> torch.Tensor:
    """(H, W) 0/1 mask of the frequencies (in FFT order) whose radius is at most ``cutoff``
    times Nyquist (1 keeps every frequency inside the inscribed circle)."""
    if not 0 < cutoff <= 1.5:
        raise ValueError(f"lowpass: cutoff must lie in (0, 1.5] (a fraction of Nyquist), "
                         f"got {cutoff}")
    fy = torch.fft.fftfreq(height, device=device)[:, None] * 2  # Nyquist = 1
    fx = torch.fft.fftfreq(width, device=device)[None, :] * 2
    return ((fy ** 2 + fx ** 2).sqrt() <= cutoff).float()


def lowpass_filter(a: torch.Tensor, cutoff: float) -> torch.Tensor:
    """(..., H, W) with every frequency above the cut-off removed."""
    mask = lowpass_mask(a.shape[-2], a.shape[-1], cutoff, a.device)
    return torch.fft.ifft2(torch.fft.fft2(a) * mask).real


def input_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) gradient of each image's target score."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = model(x).gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad


def lowpass_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                     cutoff: float) -> torch.Tensor:
    """(N, C, H, W) input gradient, low-pass filtered."""
    return lowpass_filter(input_gradient(model, x, target), cutoff)


def choose_cutoff(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  cutoffs: list[float], steps: int = 16) -> tuple[float, dict[float, float]]:
    """The cut-off whose maps on held-out images (N, C, H, W) score best, and every
    cut-off's score: mean insertion minus mean deletion of the target class."""
    if not cutoffs:
        raise ValueError("lowpass: no candidate cut-offs")
    grad = input_gradient(model, x, target)
    scores = {}
    for cutoff in cutoffs:
        maps = lowpass_filter(grad, cutoff).abs().sum(dim=1)
        scores[cutoff] = float(insertion(model, x, target, maps, steps=steps).mean()
                               - deletion(model, x, target, maps, steps=steps).mean())
    return max(scores, key=lambda c: (scores[c], -c)), scores
