"""The bundled demo model: a small CNN trained on first use (Fashion-MNIST, else procedural).

Training takes well under a minute on a CPU; the weights are cached under the cache directory
keyed by the training inputs, so later uses load them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stimuli.cache import TensorCache
from stimuli.datasets import ImageDataset, fashion_mnist_dir, load_fashion_mnist, procedural_dataset

log = logging.getLogger(__name__)

DEMO_VERSION = 1  # bump when the architecture or training recipe changes
DEMO_LAYERS = ("block1", "block2", "block3")


class DemoCNN(nn.Module):
    """Three conv blocks (conv 3x3 + ReLU) and a linear head, for 1 x 28 x 28 inputs.

    Shapes: input N, 1, 28, 28 -> block1 N, 16, 28, 28 -> block2 N, 32, 14, 14
    -> block3 N, 64, 7, 7 -> logits N, 10. Hook ``block1``..``block3`` (post-ReLU, >= 0).
    """

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64 * 4, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        return self.head(self.block3(x))


def demo_preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) scaled to [-1, 1]."""
    return (torch.tensor(np.asarray(images), dtype=torch.float32)[:, None] / 127.5) - 1.0


@dataclass(frozen=True)
class DemoModel:
    """The trained demo model, the data it was trained on, and its held-out accuracy."""

    model: DemoCNN
    dataset: ImageDataset  # held-out images, used as the demo's stimulus pool
    accuracy: float


def demo_dataset(
    data: str = "auto", *, split: str = "train", seed: int = 0, n_procedural: int = 12000
) -> ImageDataset:
    """Fashion-MNIST for "fashion-mnist" (or "auto" with a copy found), else procedural."""
    if data not in ("auto", "fashion-mnist", "procedural"):
        raise ValueError(f"data must be 'auto', 'fashion-mnist' or 'procedural', not {data!r}")
    if data == "fashion-mnist" or (data == "auto" and fashion_mnist_dir() is not None):
        return load_fashion_mnist(split)
    if data == "auto":
        log.warning("no Fashion-MNIST copy found; the demo model uses procedural shapes")
    n = n_procedural if split == "train" else 4000
    return procedural_dataset(n, seed=seed + (0 if split == "train" else 1))


def train_demo_model(
    train: ImageDataset,
    *,
    train_samples: int = 60000,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> DemoCNN:
    """Train a DemoCNN on the first ``train_samples`` images of ``train`` with Adam."""
    if train_samples < 1 or epochs < 1:
        raise ValueError("train_samples and epochs must be positive")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DemoCNN(len(train.classes)).to(device)
    x = demo_preprocess(train.images[:train_samples])  # N, 1, 28, 28
    y = torch.from_numpy(train.labels[:train_samples])  # N
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("demo model epoch %d: loss %.3f", epoch + 1, total / len(x))
    log.info("trained the demo model in %.1f s", time.perf_counter() - start)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageDataset, *, batch_size: int = 1000) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(data.images), batch_size):
        logits = model(demo_preprocess(data.images[i : i + batch_size]).to(device))
        correct += int(
            (logits.argmax(1).cpu() == torch.from_numpy(data.labels[i : i + batch_size])).sum()
        )
    return correct / len(data.images)


def load_demo_model(
    *,
    data: str = "auto",
    train_samples: int = 60000,
    epochs: int = 2,
    seed: int = 0,
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> DemoModel:
    """The demo CNN, trained on first use and cached; returns it with its held-out images."""
    train = demo_dataset(data, split="train", seed=seed, n_procedural=train_samples)
    test = demo_dataset(data, split="test", seed=seed)
    inputs = {
        "version": DEMO_VERSION,
        "data": train.name,
        "data_sha256": hashlib.sha256(train.images[:train_samples].tobytes()).hexdigest(),
        "train_samples": train_samples,
        "epochs": epochs,
        "seed": seed,
    }
    cache = TensorCache(cache_dir)
    entry = cache.load("demo-cnn", inputs)
    model = DemoCNN(len(train.classes))
    if entry is None:
        model = train_demo_model(
            train, train_samples=train_samples, epochs=epochs, seed=seed, device=device
        ).cpu()
        acc = accuracy(model, test)
        cache.save("demo-cnn", inputs, {"state_dict": model.state_dict(), "accuracy": acc})
        log.info("demo model: held-out accuracy %.3f on %s", acc, test.name)
    else:
        model.load_state_dict(entry["state_dict"])
        acc = float(entry["accuracy"])
    return DemoModel(model=model.to(device).eval(), dataset=test, accuracy=acc)
