"""CRAFT (Fel et al. 2023, "CRAFT: Concept Recursive Activation FacTorization"): a class's
concepts are the NMF dictionary of a layer's activations on random crops of images of that
class, and a concept's importance is its Sobol total-order index for the class logit.

The model is split into g (images -> non-negative activations, e.g. after a ReLU) and h
(activations -> logits). Importance follows the authors' code: each spatial position of an
image's activations is coded on the dictionary (non-negative least squares), the codes of
each concept are scaled by quasi-random masks (a scrambled Sobol design, Saltelli's A, B
and C_i matrices), the scaled codes are decoded and passed through h, and Jansen's
estimator gives each concept's total index, averaged over the images. The residual of the
reconstruction is dropped, as in the paper.

Letters: N images, M crops, C channels, S image side, s crop side, h, w activation height
and width, K concepts, n designs, P perturbations ((K + 2) n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import qmc
from torch import nn

from stimuli.nmf import NMF, code_solver, nnls_codes

# Elements of the perturbed activations (b images x q designs x C h w) passed through h at
# once: 2^24 floats are 64 MiB, enough to batch a small CNN's whole importance in a few calls.
_CHUNK = 1 << 24
# A variance of f below this fraction of its mean square is float rounding: no concept
# changes the logit of that image, and every index is 0 there.
_FLAT = 1e-12


@dataclass(frozen=True)
class Concepts:
    """A class's concepts and the crops they were fitted on (tensors on the images' device)."""

    class_index: int
    bank: torch.Tensor  # K, C: non-negative concept directions (unit rows)
    crops: torch.Tensor  # M, 3, s, s: crops in [0, 1]
    codes: torch.Tensor  # M, K: each crop's concept codes
    importance: torch.Tensor  # K: Sobol total-order index of each concept for the class

    def top_crops(self, concept: int, n: int) -> torch.Tensor:
        """Indices (n,) of the crops with the largest code of ``concept``, largest first."""
        m, k = self.codes.shape
        if not 0 <= concept < k:
            raise ValueError(f"craft: concept must lie in [0, {k - 1}], got {concept}")
        if not 1 <= n <= m:
            raise ValueError(f"craft: n must lie in [1, {m}] (the number of crops), got {n}")
        return torch.topk(self.codes[:, concept], n).indices


def _activations(g: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """g's activations (N, C, h, w) of x (N, 3, H, W), checked to be non-negative."""
    acts = torch.cat([g(x[i:i + batch]) for i in range(0, len(x), batch)])
    if acts.ndim != 4:
        raise ValueError(f"craft: g must return activations (N, C, h, w), got shape "
                         f"{tuple(acts.shape)}")
    if float(acts.min()) < 0:
        raise ValueError("craft: g returned negative activations; cut the model after a ReLU "
                         "(CRAFT factorizes non-negative activations)")
    return acts


def _codes_of(acts: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Per-position codes (N, K, h, w) of activations (N, C, h, w) on bank (K, C)."""
    n, c, height, width = acts.shape
    if bank.ndim != 2 or bank.shape[1] != c:
        raise ValueError(f"craft: bank must be (K, C) with C = {c} channels of g, got shape "
                         f"{tuple(bank.shape)}")
    bank = bank.to(acts)
    flat = acts.permute(0, 2, 3, 1).reshape(-1, c)  # N h w, C
    codes = nnls_codes(flat, bank, solver=code_solver(bank))  # N h w, K
    return codes.reshape(n, height, width, -1).permute(0, 3, 1, 2)  # N, K, h, w


@torch.no_grad()
def spatial_codes(g: nn.Module, bank: torch.Tensor, x: torch.Tensor, *,
                  batch: int = 256) -> torch.Tensor:
    """Codes (N, K, h, w) of each spatial position of g(x) on the concepts bank (K, C)."""
    return _codes_of(_activations(g, x, batch), bank)


@torch.no_grad()
def concept_maps(g: nn.Module, bank: torch.Tensor, x: torch.Tensor, size: int) -> torch.Tensor:
    """Where each concept lies in each image: spatial codes upsampled bilinearly to
    (N, K, size, size) for x (N, 3, S, S)."""
    if size < 1:
        raise ValueError(f"craft: size must be at least 1, got {size}")
    codes = spatial_codes(g, bank, x)  # N, K, h, w
    return F.interpolate(codes, size=(size, size), mode="bilinear", align_corners=False)


def sobol_masks(k: int, n: int, seed: int) -> torch.Tensor:
    """Masks ((K + 2) n, K) in [0, 1]: A, B, then C_1 .. C_K (A with column i from B).

    A and B are the two halves of a scrambled Sobol design in 2K dimensions. Its first n
    points are taken from the next power of two, so any n is allowed (a power of two keeps
    the design balanced) and scipy has nothing to warn about.
    """
    if k < 1 or n < 2:
        raise ValueError(f"craft: need k >= 1 concepts and n >= 2 designs, got k={k}, n={n}")
    points = qmc.Sobol(d=2 * k, scramble=True, rng=seed).random_base2(math.ceil(math.log2(n)))
    a, b = points[:n, :k], points[:n, k:]  # n, K each
    c = np.repeat(a[None], k, axis=0)  # K, n, K
    for i in range(k):
        c[i, :, i] = b[:, i]
    return torch.from_numpy(np.concatenate([a, b, c.reshape(k * n, k)])).float()


def jansen_total(f_a: torch.Tensor, f_b: torch.Tensor, f_c: torch.Tensor) -> torch.Tensor:
    """Jansen's estimator of the total-order Sobol indices (..., K).

    ST_i = mean((f(A) - f(C_i))^2) / (2 Var f), Var over f(A) and f(B) together, from
    f_a (..., n), f_b (..., n) and f_c (..., K, n) (leading dimensions are independent
    problems, e.g. images). Where f does not vary (up to rounding) every index is 0.
    """
    if f_a.shape != f_b.shape or f_c.shape[:-2] + f_c.shape[-1:] != f_a.shape:
        raise ValueError(f"craft: jansen_total needs f_a and f_b (..., n) and f_c (..., K, n), "
                         f"got {tuple(f_a.shape)}, {tuple(f_b.shape)}, {tuple(f_c.shape)}")
    if f_a.shape[-1] < 2:
        raise ValueError("craft: jansen_total needs at least 2 designs")
    fa, fb, fc = f_a.double(), f_b.double(), f_c.double()
    pooled = torch.cat([fa, fb], dim=-1)  # ..., 2n
    var = pooled.var(dim=-1, correction=0)  # ...
    flat = var <= _FLAT * pooled.square().mean(dim=-1)
    total = (fa[..., None, :] - fc).square().mean(dim=-1) / (2 * var[..., None])  # ..., K
    return torch.where(flat[..., None], 0.0, total).to(f_a.dtype)


@torch.no_grad()
def sobol_importance(h: nn.Module, codes: torch.Tensor, bank: torch.Tensor, class_index: int,
                     *, n_designs: int, seed: int) -> torch.Tensor:
    """Total-order Sobol index (K,) of each concept for the class logit, averaged over images.

    ``codes`` (N, K, h, w) are the images' per-position codes on ``bank`` (K, C). Each
    perturbation scales concept k's codes by its mask, decodes them to activations
    (N, C, h, w) and reads h's logit of ``class_index``.
    """
    n_img, k, height, width = codes.shape
    if bank.shape[0] != k:
        raise ValueError(f"craft: codes have {k} concepts, bank {bank.shape[0]}")
    masks = sobol_masks(k, n_designs, seed).to(codes)  # P, K
    # Z: each concept's part of the activations, (N, K, C h w); a perturbation is masks @ Z
    parts = (codes[:, :, None] * bank.to(codes)[None, :, :, None, None]).flatten(2)
    d = parts.shape[-1]
    q = min(len(masks), max(1, _CHUNK // d))  # designs per call
    b = max(1, _CHUNK // (q * d))  # images per call
    f = torch.empty(n_img, len(masks), dtype=codes.dtype, device=codes.device)  # N, P
    for i in range(0, n_img, b):
        for j in range(0, len(masks), q):
            acts = torch.matmul(masks[j:j + q], parts[i:i + b])  # b, q, C h w
            logits = h(acts.reshape(-1, bank.shape[1], height, width))  # b q, classes
            f[i:i + b, j:j + q] = logits[:, class_index].reshape(-1, len(masks[j:j + q]))
    f_a, f_b = f[:, :n_designs], f[:, n_designs:2 * n_designs]  # N, n each
    f_c = f[:, 2 * n_designs:].reshape(n_img, k, n_designs)  # N, K, n
    return jansen_total(f_a, f_b, f_c).mean(dim=0)


def _random_crops(images: torch.Tensor, n: int, side: int,
                  generator: torch.Generator) -> torch.Tensor:
    """n square crops (n, 3, s, s) of random images at random positions."""
    n_img, channels, height, width = images.shape
    which = torch.randint(n_img, (n,), generator=generator)
    top = torch.randint(height - side + 1, (n,), generator=generator)
    left = torch.randint(width - side + 1, (n,), generator=generator)
    offsets = torch.arange(side)
    rows = (top[:, None] + offsets)[:, None, :, None]  # n, 1, s, 1
    cols = (left[:, None] + offsets)[:, None, None, :]  # n, 1, 1, s
    chans = torch.arange(channels)[None, :, None, None]  # 1, 3, 1, 1
    index = [t.to(images.device) for t in (which[:, None, None, None], chans, rows, cols)]
    return images[tuple(index)]


def _check(images: torch.Tensor, n_concepts: int, n_crops: int, crop_size: int,
           n_designs: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"craft: images must be (N, 3, S, S), got shape {tuple(images.shape)}")
    if len(images) < 1:
        raise ValueError("craft: images must hold at least 1 image, got 0")
    side = min(images.shape[-2:])
    if not 2 <= crop_size <= side:
        raise ValueError(f"craft: crop_size must lie in [2, {side}] pixels (the image side), "
                         f"got {crop_size}")
    if n_concepts < 1:
        raise ValueError(f"craft: n_concepts must be at least 1, got {n_concepts}")
    if n_crops < n_concepts:
        raise ValueError(f"craft: n_crops must be at least n_concepts = {n_concepts}, got "
                         f"{n_crops}")
    if n_designs < 2:
        raise ValueError(f"craft: n_designs must be at least 2, got {n_designs}")


@torch.no_grad()
def fit_concepts(g: nn.Module, h: nn.Module, images: torch.Tensor, class_index: int, *,
                 n_concepts: int = 6, n_crops: int = 256, crop_size: int = 16,
                 n_designs: int = 32, seed: int = 0, batch: int = 256) -> Concepts:
    """The concepts of class ``class_index`` for images (N, 3, S, S) in [0, 1] of that class.

    ``n_crops`` crops of ``crop_size`` pixels (seeded positions), each resized back to the
    image's size, are passed through g and pooled by spatial mean; NMF of these (M, C)
    activations gives the bank (K, C) and the crops' codes (M, K). Importance is measured
    on the whole images' activations (:func:`sobol_importance`).
    """
    _check(images, n_concepts, n_crops, crop_size, n_designs)
    acts = _activations(g, images, batch)  # N, C, h, w
    channels = acts.shape[1]
    if n_concepts > channels:
        raise ValueError(f"craft: n_concepts must be at most C = {channels} (g's channels), "
                         f"got {n_concepts}")
    logits = h(acts[:1])
    if logits.ndim != 2 or not 0 <= class_index < logits.shape[1]:
        raise ValueError(f"craft: class_index must lie in [0, {logits.shape[-1] - 1}] (h's "
                         f"logits {tuple(logits.shape)}), got {class_index}")
    generator = torch.Generator().manual_seed(seed)
    crops = _random_crops(images, n_crops, crop_size, generator)  # M, 3, s, s
    resized = F.interpolate(crops, size=images.shape[-2:], mode="bilinear",
                            align_corners=False)  # M, 3, S, S
    pooled = _activations(g, resized, batch).mean(dim=(2, 3))  # M, C
    nmf = NMF(n_components=n_concepts, random_state=seed, device=images.device)
    codes = nmf.fit_transform(pooled)  # M, K
    bank = nmf.components_  # K, C
    importance = sobol_importance(h, _codes_of(acts, bank), bank, class_index,
                                  n_designs=n_designs, seed=seed)
    return Concepts(class_index=class_index, bank=bank, crops=crops, codes=codes,
                    importance=importance)
