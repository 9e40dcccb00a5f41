"""Attribution maps: one map per image and target class, larger where the image drove the
model's score for that class more.

Captum computes what it implements (saliency, SmoothGrad, Integrated Gradients, Grad-CAM,
occlusion); RISE, the low-pass filtered gradient and WAM, which Captum lacks, live in their
own modules. Every method returns (N, H, W) for inputs (N, C, H, W): gradient methods as the
absolute value summed over channels (``signed=True`` keeps the sign: the analytic gradient
of a linear model, for instance), perturbation methods and Grad-CAM as the evidence for the
class clamped at zero (``signed=True`` keeps the evidence against).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from stimuli.attribution.lowpass import lowpass_gradient
from stimuli.attribution.rise import rise
from stimuli.attribution.wam import wam

ATTRIBUTIONS: dict[str, str] = {
    "saliency": "saliency: the gradient of the decided class's score (Simonyan et al. 2014)",
    "smoothgrad": "SmoothGrad: the gradient averaged over noisy copies of the image",
    "integrated_gradients": "Integrated Gradients from a black image (Sundararajan et al. 2017)",
    "gradcam": "Grad-CAM: the last convolution's channels weighted by their gradients",
    "occlusion": "occlusion: how much the class's score drops when a patch is greyed out",
    "rise": "RISE: the class's score averaged over random masks that keep each pixel",
    "lowpass": "low-pass filtered gradient, at the cut-off most faithful for this model",
    "wam": "WAM: gradients in the wavelet domain, summed over scales at each position",
}


def last_conv(model: nn.Module) -> nn.Module:
    """The model's last Conv2d (Grad-CAM's default layer)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("gradcam: the model has no Conv2d layer; name one with layer=...")
    return convs[-1]


def named_layer(model: nn.Module, name: str) -> nn.Module:
    layers = dict(model.named_modules())
    if name not in layers or not name:
        known = ", ".join(n for n in layers if n) or "none"
        raise ValueError(f"no layer {name!r} in the model (layers: {known})")
    return layers[name]


def _gradient_map(a: torch.Tensor, signed: bool) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W)."""
    return a.sum(dim=1) if signed else a.abs().sum(dim=1)


def _evidence_map(a: torch.Tensor, signed: bool) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W)."""
    m = a.sum(dim=1)
    return m if signed else m.clamp(min=0)


def _saliency(model, x, target, *, signed, seed, layer):
    return _gradient_map(Saliency(model).attribute(x, target=target, abs=False), signed)


def _smoothgrad(model, x, target, *, signed, seed, layer, n_samples: int = 16,
                noise: float = 0.15):
    spread = float(x.detach().max() - x.detach().min()) or 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a = NoiseTunnel(Saliency(model)).attribute(
            x, target=target, nt_type="smoothgrad", nt_samples=int(n_samples),
            nt_samples_batch_size=int(n_samples), stdevs=noise * spread, abs=False)
    return _gradient_map(a, signed)


def _integrated_gradients(model, x, target, *, signed, seed, layer, n_steps: int = 32):
    a = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                             n_steps=int(n_steps))
    return _gradient_map(a, signed)


def _gradcam(model, x, target, *, signed, seed, layer):
    module = named_layer(model, layer) if layer else last_conv(model)
    cam = LayerGradCam(model, module).attribute(x, target=target,
                                                relu_attributions=not signed)  # N, 1, h, w
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[:, 0]


def _occlusion(model, x, target, *, signed, seed, layer, window: float = 0.2,
               stride: float = 0.1):
    side = x.shape[-1]
    w, s = max(1, round(window * side)), max(1, round(stride * side))
    a = Occlusion(model).attribute(x, sliding_window_shapes=(x.shape[1], w, w),
                                   strides=(x.shape[1], s, s), baselines=0.5, target=target,
                                   perturbations_per_eval=64)
    return _evidence_map(a, signed) / x.shape[1]


def _rise(model, x, target, *, signed, seed, layer, n_masks: int = 512, cells: int = 7,
          keep: float = 0.5):
    m = rise(model, x, target, n_masks=int(n_masks), cells=int(cells), keep=keep, seed=seed)
    return m if signed else m.clamp(min=0)


def _lowpass(model, x, target, *, signed, seed, layer, cutoff: float = 0.35):
    return _gradient_map(lowpass_gradient(model, x, target, cutoff), signed)


def _wam(model, x, target, *, signed, seed, layer, wavelet: str = "haar", levels: int = 3,
         n_samples: int = 8, noise: float = 0.1):
    return wam(model, x, target, wavelet=wavelet, levels=int(levels),
               n_samples=int(n_samples), noise=noise, seed=seed, signed=signed)


_METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "saliency": _saliency, "smoothgrad": _smoothgrad,
    "integrated_gradients": _integrated_gradients, "gradcam": _gradcam,
    "occlusion": _occlusion, "rise": _rise, "lowpass": _lowpass, "wam": _wam,
}


def attribute(method: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
              seed: int = 0, layer: str | None = None, signed: bool = False,
              **options) -> torch.Tensor:
    """Maps (N, H, W) of ``method`` for inputs x (N, C, H, W) and target classes (N,).

    ``options`` are the method's own keyword settings (n_samples, n_steps, cutoff...); an
    unknown one is an error naming the method's settings.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown attribution method {method!r} (known: "
                         f"{', '.join(_METHODS)})")
    if x.ndim != 4:
        raise ValueError(f"{method}: inputs must be (N, C, H, W), got shape {tuple(x.shape)}")
    fn = _METHODS[method]
    allowed = fn.__code__.co_varnames[fn.__code__.co_argcount:fn.__code__.co_argcount
                                      + fn.__code__.co_kwonlyargcount]
    unknown = sorted(set(options) - set(allowed) - {"signed", "seed", "layer"})
    if unknown:
        own = [a for a in allowed if a not in ("signed", "seed", "layer")]
        raise ValueError(f"{method}: unknown option(s) {', '.join(unknown)} (its options: "
                         f"{', '.join(own) or 'none'})")
    if isinstance(target, int):
        target = torch.full((len(x),), target, dtype=torch.long, device=x.device)
    if target.shape != (len(x),):
        raise ValueError(f"{method}: target must be an int or one class per image "
                         f"({len(x)},), got shape {tuple(target.shape)}")
    x = x.detach().float().requires_grad_(True)  # what Captum asks of its inputs
    was_training = model.training
    model.eval()
    try:
        out = fn(model, x, target.to(x.device), signed=signed, seed=seed, layer=layer,
                 **options)
    finally:
        model.train(was_training)
    return out.detach()
