"""The critics' parts as plain functions over tensors: how drawings become binary ink, the
small conv encoder both critics share, the augmentations SimCLR pairs, and the two losses
(NT-Xent, prototypical).

Letters: N drawings, S side in pixels, D features, W ways, Q queries per way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class Augmentation(BaseModel):
    """How far one view of a drawing may move from another: an affine map, a smooth
    elastic jitter of the strokes and, sometimes, thicker strokes. The ranges follow the
    'normal' strength of Boutin et al.'s SimCLR critic (rotation 15 deg, scale 0.75-1.33,
    shear 10 deg, translation 10%), less their random crops, plus the jitter and
    thickness that separate two people's drawings of one character. Unlike the fixed,
    milder views of the generative models' regularizers (augment.py), these ranges
    define what a critic counts as the same drawing, so they are configured and keyed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rotation: float = Field(15.0, ge=0, le=180)  # degrees, either way
    scale: float = Field(0.25, ge=0, lt=1)  # log-uniform in [1/(1+s), 1+s]
    shear: float = Field(10.0, ge=0, lt=60)  # degrees, either way
    translate: float = Field(0.1, ge=0, le=0.5)  # fraction of the side, either way
    elastic: float = Field(0.03, ge=0, le=0.3)  # std of the displacement, fraction of side
    thicken: float = Field(0.25, ge=0, le=1)  # probability of one dilation


def to_ink(images: np.ndarray, threshold: float, device: torch.device | str) -> torch.Tensor:
    """uint8 (N, S, S) -> float {0, 1} (N, 1, S, S): each image scaled to [0, 1] by its
    own range and thresholded, as the papers do before either critic ("equalize
    statistics"), so a model's grey levels or faint ink do not move its scores."""
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"drawings must be (N, S, S), got shape {images.shape}")
    x = torch.as_tensor(np.ascontiguousarray(images), device=device).float()  # N S S
    low = x.flatten(1).amin(1).view(-1, 1, 1)
    span = (x.flatten(1).amax(1).view(-1, 1, 1) - low).clamp_min(1e-6)
    return ((x - low) / span > threshold).float().unsqueeze(1)  # N 1 S S


def conv_encoder(size: int, width: int, blocks: int, features: int) -> nn.Sequential:
    """Conv-4 of Snell et al. with strided 3x3 convolutions in place of 2x2 max pooling
    (each block: conv, batch norm, ReLU, halving the side), then a linear map of the
    flattened grid, which keeps where the strokes are: N 1 S S -> N D. Striding makes
    the critics ~4x cheaper to train on a CPU than convolving at full resolution."""
    if size < 1 << blocks:
        raise ValueError(f"{blocks} blocks need drawings of at least {1 << blocks} px, "
                         f"got {size}")
    side = size
    for _ in range(blocks):
        side = (side + 1) // 2  # a stride-2 3x3 convolution with padding 1
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width),
                   nn.ReLU()]
        channels = width
    layers += [nn.Flatten(), nn.Linear(width * side * side, features)]  # N (width*side^2)
    return nn.Sequential(*layers)


def augment(x: torch.Tensor, aug: Augmentation, generator: torch.Generator,
            threshold: float) -> torch.Tensor:
    """A random view of each drawing, x float (N, 1, S, S) -> (N, 1, S, S) binary ink."""
    n, _, s, _ = x.shape
    dev = x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=dev)

    angle = uniform(-1, 1) * math.radians(aug.rotation)
    shear = uniform(-1, 1) * math.radians(aug.shear)
    log_scale = math.log1p(aug.scale)
    scale = torch.exp(uniform(-log_scale, log_scale))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, device=dev)  # N 2 3, maps output to input coordinates
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (cos + torch.tan(shear) * sin) / scale
    theta[:, :, 2] = 2 * aug.translate * (2 * torch.rand(n, 2, generator=generator,
                                                         device=dev) - 1)
    grid = F.affine_grid(theta, [n, 1, s, s], align_corners=False)  # N S S 2
    if aug.elastic > 0:
        coarse = torch.randn(n, 2, 4, 4, generator=generator, device=dev) * 2 * aug.elastic
        flow = F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False)
        grid = grid + flow.permute(0, 2, 3, 1)  # N S S 2
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug.thicken > 0:
        thick = torch.rand(n, generator=generator, device=dev) < aug.thicken
        y = torch.where(thick.view(n, 1, 1, 1), F.max_pool2d(y, 3, 1, 1), y)
    return (y > threshold).float()


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss (Chen et al. 2020): a[i] and b[i] (N, D) are two views of one
    drawing; every other view in the batch is a negative."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=1)  # 2N D
    logits = z @ z.T / temperature  # 2N 2N
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device),
                                float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def squared_distances(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(M, D), (W, D) -> (M, W) squared Euclidean distances."""
    return (queries.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)


def prototypical_loss(support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Snell et al. (2017), one shot: support (W, D) is each way's prototype, queries
    (W*Q, D) come way by way; softmax over negative squared distances."""
    ways = support.shape[0]
    target = torch.arange(ways, device=queries.device).repeat_interleave(
        queries.shape[0] // ways)  # W*Q
    return F.cross_entropy(-squared_distances(queries, support), target)
