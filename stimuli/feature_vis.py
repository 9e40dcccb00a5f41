"""Feature visualization by optimization, batched over units: MACO (Fel et al. 2023), the
Fourier baseline (Olah et al. 2017) and feature accentuation (Hamblin et al. 2024).

One run optimizes B images at once, each for its own unit and direction (maximize or
minimize): the model is in eval mode, so the images do not interact and a layer's units cost
one optimization instead of one per unit. Images live in pixel space [0, 1] (what a
participant sees); the model gets them normalized. Each step shows the model ``views``
random affine crops of every image (jitter, scale, rotation: the transformation robustness
that keeps visualizations from being adversarial patterns), plus a little noise.

Letters: B images, C colour channels, S image side, F = S // 2 + 1 rfft columns, V views,
U units of the objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from stimuli.activations import pool, to_positions
from stimuli.models import channels_first, get_layer
from stimuli.sources.base import Encoder
from stimuli.spectrum import COLOR_CORRELATION, decorrelate


class _Reached(Exception):
    """Raised by a hook once the objective's layer has run: the rest of the model is not
    needed, and on an early layer the saved forward pass is most of the step's cost."""

    def __init__(self, output: object):
        self.output = output


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters need no gradients while images are optimized."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class LayerOutput:
    """Differentiable channels-first output of one layer ("" = the model's output) for
    images in pixel space, (B, C, S, S) -> (B, C', H, W) or (B, C')."""

    def __init__(self, model: nn.Module, layer: str, *, mean, std, cls_token: bool = True):
        self.model = model
        self.layer = layer
        self.module = get_layer(model, layer) if layer else None
        self.cls_token = cls_token
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean.to(pixels)) / self.std.to(pixels)
        if self.module is None:
            return self.model(x)

        def stop(_module: nn.Module, _inputs: tuple, output: object) -> None:
            raise _Reached(output)

        handle = self.module.register_forward_hook(stop)
        try:
            self.model(x)
        except _Reached as reached:
            return channels_first(reached.output, self.layer, cls_token=self.cls_token)
        finally:
            handle.remove()
        raise ValueError(f"layer {self.layer!r} did not run in the model's forward pass")


class UnitObjective:
    """Pooled unit activations (B, U) of images in pixel space: the layer's channels, or
    dictionary codes when ``encoder`` maps position vectors (M, C) to codes (M, U)
    differentiably. Pooled as the exemplar search pools them, so that a visualization's
    activation compares with its natural exemplars'."""

    def __init__(self, output: LayerOutput, encoder: Encoder | None, pooling: str = "mean"):
        self.output = output
        self.encoder = encoder
        self.pooling = pooling

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        acts = self.output(pixels)
        if self.encoder is None:
            return pool(acts, self.pooling)
        if acts.ndim == 2:
            return self.encoder(acts)
        n, _, h, w = acts.shape
        codes = self.encoder(to_positions(acts)).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        return pool(codes, self.pooling)


# -- parameterizations -------------------------------------------------------------------


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per image."""
    dims = tuple(range(1, x.ndim))
    x = x - x.mean(dim=dims, keepdim=True)
    return x / (x.std(dim=dims, keepdim=True) + 1e-4)


def recorrelate(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour channels to RGB (B, 3, S, S); grey images are left as they are."""
    if x.shape[1] != 3:
        return x
    return torch.einsum("bcxy,cd->bdxy", x, COLOR_CORRELATION.to(x))


def frequencies(size: int) -> torch.Tensor:
    """Radial spatial frequency (S, F) of each rfft2 coefficient of an S x S image."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return torch.sqrt(fx**2 + fy**2)


class Maco:
    """Phase-only parameterization: the magnitude spectrum (C, S, F) stays that of natural
    images, the phase (B, C, S, F) is optimized, the spatial image is standardized and
    squashed into [0, 1] by a sigmoid."""

    def __init__(self, magnitude: torch.Tensor, phase: torch.Tensor):
        self.magnitude = magnitude
        self.phase = phase.clone().requires_grad_(True)
        self.params = [self.phase]
        self.size = phase.shape[-2]

    def image(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude.expand_as(self.phase),
                               _standardize(self.phase) * math.pi)
        spatial = torch.fft.irfft2(spectrum, s=(self.size, self.size))
        return torch.sigmoid(recorrelate(_standardize(spatial)))


class Fourier:
    """Olah et al. (2017): a free complex spectrum (B, C, S, F) scaled by 1 / f^decay, so
    that low frequencies move first (the decorrelated, 1/f-preconditioned parameterization)."""

    def __init__(self, spectrum: torch.Tensor, decay_power: float = 1.0):
        self.spectrum = torch.view_as_real(spectrum).clone().requires_grad_(True)
        self.params = [self.spectrum]
        self.size = spectrum.shape[-2]
        f = frequencies(self.size).clamp(min=1.0 / self.size)
        self.scale = (1.0 / f**decay_power).to(spectrum.device)

    def image(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        spatial = torch.fft.irfft2(spectrum, s=(self.size, self.size))
        return torch.sigmoid(recorrelate(_standardize(spatial)))


class Accentuation:
    """Hamblin et al. (2024): an image-seeded Fourier parameterization. The image's logit
    spectrum is the seed's plus a change that starts at zero (step 0 reproduces the seed),
    scaled by 1 / f^decay so that low frequencies move first. The scale is in the forward
    pass, not on the gradient: Adam normalizes each coordinate's gradient, which would undo
    a gradient-side preconditioner."""

    def __init__(self, seeds: torch.Tensor, decay_power: float = 1.0, eps: float = 1e-3):
        self.size = seeds.shape[-1]
        clipped = seeds.clamp(eps, 1 - eps)
        logits = torch.log(clipped / (1 - clipped))
        self.seed = torch.fft.rfft2(decorrelate(logits) if logits.shape[1] == 3 else logits)
        f = frequencies(self.size).clamp(min=1.0 / self.size)
        scale = 1.0 / f**decay_power
        self.scale = (scale / scale.max() * self.size).to(seeds.device)  # S, F
        self.delta = torch.zeros(torch.view_as_real(self.seed).shape, device=seeds.device,
                                 requires_grad=True)
        self.params = [self.delta]

    def image(self) -> torch.Tensor:
        spectrum = self.seed + torch.view_as_complex(self.delta) * self.scale
        return torch.sigmoid(recorrelate(torch.fft.irfft2(spectrum, s=(self.size,) * 2)))


# -- transformation robustness ------------------------------------------------------------


@dataclass(frozen=True)
class Views:
    """Random affine views of each image per step: a crop of side ``scale`` (fraction of the
    image, interpolated from ``scale[0]`` at the first step to ``scale[1]`` at the last: MACO's
    shrinking boxes), its centre moved by up to ``shift`` (fraction), rotated by up to
    ``angle`` degrees, resampled at the model's input size, plus Gaussian and uniform noise."""

    n: int = 4
    scale: tuple[float, float] = (1.0, 0.6)
    shift: float = 0.1
    angle: float = 0.0
    noise: float = 0.02

    def __call__(self, x: torch.Tensor, out: int, progress: float,
                 gen: torch.Generator) -> torch.Tensor:
        b, c = x.shape[:2]
        m = b * self.n

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(m, generator=gen)

        s = self.scale[0] + (self.scale[1] - self.scale[0]) * progress
        scale = s * uniform(0.9, 1.0) if self.scale[0] != 1.0 or self.scale[1] != 1.0 \
            else torch.ones(m)
        theta = torch.deg2rad(uniform(-self.angle, self.angle))
        room = (1 - scale).clamp(min=0) + self.shift  # the centre may move this far
        tx, ty = uniform(-1, 1) * room, uniform(-1, 1) * room
        cos, sin = torch.cos(theta) * scale, torch.sin(theta) * scale
        affine = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(affine.to(x), [m, c, out, out], align_corners=False)
        views = F.grid_sample(x.repeat_interleave(self.n, 0), grid, mode="bilinear",
                              padding_mode="reflection", align_corners=False)
        if self.noise:
            noise = torch.randn(views.shape, generator=gen) * self.noise
            noise += (torch.rand(views.shape, generator=gen) - 0.5) * self.noise
            views = views + noise.to(views)
        return views


# -- optimization --------------------------------------------------------------------------


@dataclass
class Result:
    """Optimized images (B, C, S, S) in [0, 1], their objective (B,) on the whole image at
    the model's input size (signed: what each image's unit reached), and the accumulated
    absolute input gradients (B, S, S), MACO's attribution of where the image matters."""

    images: torch.Tensor
    activations: torch.Tensor
    transparency: torch.Tensor


def optimize(
    param: Maco | Fourier | Accentuation,
    objective: Callable[[torch.Tensor], torch.Tensor],
    units: torch.Tensor,
    signs: torch.Tensor,
    *,
    steps: int,
    lr: float,
    input_size: int,
    views: Views,
    gen: torch.Generator,
    penalty: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "feature visualization",
) -> Result:
    """Run ``steps`` NAdam steps on every image at once. Image i follows unit ``units[i]``
    upwards (sign +1) or downwards (-1); the loss of each image is its own, so the summed
    loss's gradient reaches each image from its own term only. ``penalty`` (images -> (B,))
    is added to the loss (accentuation's closeness to the seed)."""
    optimizer = torch.optim.NAdam(param.params, lr=lr)
    index = torch.arange(len(units))
    signs = signs.float()
    transparency = torch.zeros(len(units), param.size, param.size)
    for step in tqdm(range(steps), desc=desc, unit="step", disable=None, leave=False):
        optimizer.zero_grad(set_to_none=True)
        image = param.image()
        image.retain_grad()
        seen = views(image, input_size, step / max(steps - 1, 1), gen)
        scores = objective(seen)  # B * V, U
        per_image = scores[torch.arange(len(seen)), units.repeat_interleave(views.n)]
        gain = (per_image.view(len(units), views.n).mean(1) * signs)  # B
        loss = -gain.sum()
        if penalty is not None:
            loss = loss + penalty(image).sum()
        loss.backward()
        transparency += image.grad.abs().sum(1).detach().cpu()
        optimizer.step()
    with torch.no_grad():
        final = param.image().detach()
        whole = F.interpolate(final, size=(input_size, input_size), mode="bilinear",
                              antialias=True, align_corners=False) \
            if final.shape[-1] != input_size else final
        reached = objective(whole)[index, units]
    return Result(final.cpu(), reached.cpu(), transparency)


def random_phase(n: int, channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(n, channels, size, size // 2 + 1, generator=gen)


def random_spectrum(n: int, channels: int, size: int, gen: torch.Generator,
                    std: float = 0.01) -> torch.Tensor:
    shape = (n, channels, size, size // 2 + 1)
    return torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)) * std
