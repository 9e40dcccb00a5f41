"""The two models of the utility benchmark, trained on the same data: an unconstrained CNN
(cross-entropy) and a 1-Lipschitz CNN (deel-torchlip's spectral layers and GroupSort
activations, hinge Kantorovich-Rubinstein loss), whose input gradient points along the
optimal transport plan between the classes, so that its saliency reads as a counterfactual
(Serrurier et al. 2023, "On the explainable properties of 1-Lipschitz neural networks").

Both share one layout, so that a layer named in a build means the same in either:
0 conv, 1 activation, 2 max-pool, 3 conv, 4 activation, 5 max-pool, 6 flatten, 7 linear.
Letters: N images, C channels, S image side, K classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from deel import torchlip
from torch import nn


def small_cnn(n_classes: int, *, channels: int = 3, width: int = 16,
              size: int = 32) -> nn.Sequential:
    if size % 4:
        raise ValueError(f"size: a multiple of 4 (two 2x2 poolings), not {size}")
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, n_classes),
    )


def lipschitz_cnn(n_classes: int, *, channels: int = 3, width: int = 16,
                  size: int = 32) -> torchlip.Sequential:
    """1-Lipschitz in L2 as a whole: spectral-normalized, orthogonalized convolutions and
    linear layer, GroupSort2 (gradient-norm preserving) and non-overlapping max-pooling.
    ``vanilla_export()`` gives plain torch layers computing the same function."""
    if size % 4:
        raise ValueError(f"size: a multiple of 4 (two 2x2 poolings), not {size}")
    return torchlip.Sequential(
        torchlip.SpectralConv2d(channels, width, 3, padding=1), torchlip.GroupSort2(),
        nn.MaxPool2d(2),
        torchlip.SpectralConv2d(width, 2 * width, 3, padding=1), torchlip.GroupSort2(),
        nn.MaxPool2d(2),
        nn.Flatten(), torchlip.SpectralLinear(2 * width * (size // 4) ** 2, n_classes),
    )


@dataclass(frozen=True)
class TrainReport:
    model: nn.Module  # in eval mode; a 1-Lipschitz model as its plain export
    losses: list[float]  # mean loss per epoch
    seconds: float
    train_accuracy: float


def hkr_loss(logits: torch.Tensor, labels: torch.Tensor, *, alpha: float = 0.98,
             margin: float = 0.5) -> torch.Tensor:
    """deel-torchlip's multiclass hinge-KR loss on class indices (N,)."""
    one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return torchlip.HKRMulticlassLoss(alpha=alpha, min_margin=margin)(logits, one_hot)


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     loss: Literal["ce", "hkr"] = "ce", epochs: int = 6, batch_size: int = 64,
                     lr: float = 3e-3, seed: int = 0) -> TrainReport:
    """Adam on seeded mini-batches of images (N, C, S, S) with labels (N,)."""
    if loss not in ("ce", "hkr"):
        raise ValueError(f"loss: 'ce' or 'hkr', not {loss!r}")
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}): the same "
                         f"non-zero number")
    criterion = F.cross_entropy if loss == "ce" else hkr_loss
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # layers initialized before this call keep their weights
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start, losses = time.perf_counter(), []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for i in range(0, len(images), batch_size):
            batch = order[i:i + batch_size]
            optimizer.zero_grad()
            value = criterion(model(images[batch]), labels[batch])
            value.backward()
            optimizer.step()
            total += value.item() * len(batch)
        losses.append(total / len(images))
    export = getattr(model, "vanilla_export", None)
    model = export() if callable(export) else model
    model.eval()
    with torch.no_grad():
        accuracy = float(torch.cat([model(images[i:i + 512]).argmax(1)
                                    for i in range(0, len(images), 512)]).eq(labels)
                         .float().mean())
    return TrainReport(model, losses, time.perf_counter() - start, accuracy)


def lipschitz_constant(model: nn.Module, x: torch.Tensor, *, steps: int = 50,
                       lr: float = 0.01, seed: int = 0) -> float:
    """A numerical lower bound of the model's L2 Lipschitz constant near images x: the
    largest ||f(a) - f(b)|| / ||a - b|| over pairs pushed apart in output by gradient
    ascent from x and x plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    a = x.detach().clone().requires_grad_(True)
    b = (x + 0.05 * torch.randn(x.shape, generator=generator)).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([a, b], lr=lr)
    best = 0.0
    for _ in range(steps):
        optimizer.zero_grad()
        ratio = ((model(a) - model(b)).flatten(1).norm(dim=1)
                 / (a - b).flatten(1).norm(dim=1).clamp(min=1e-8))
        best = max(best, float(ratio.detach().max()))
        (-ratio.sum()).backward()
        optimizer.step()
    return best


def certified_radius(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """For a 1-Lipschitz model: the L2 radius (N,) within which no perturbation can change
    a correct decision, (top logit - runner-up) / sqrt(2); 0 where the decision is wrong."""
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return ((true - others) / 2 ** 0.5).clamp(min=0)


def robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               steps: int = 10) -> float:
    """Accuracy under an L2 PGD attack of radius eps (images kept in [0, 1])."""
    step = 2.5 * eps / steps
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + step * grad / norm
        scale = (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1)
        delta = (delta * scale.view(-1, 1, 1, 1)).requires_grad_(True)
    with torch.no_grad():
        return float((model((x + delta).clamp(0, 1)).argmax(1) == y).float().mean())
