"""Fixtures for the stimuli tests: planted dictionaries, a tiny CNN, a small image folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment
from torch import nn


def planted_dictionary(
    n: int, c: int, k: int, *, active: int = 3, noise: float = 0.01, seed: int = 0
):
    """Non-negative X (n, c) = S (n, k) @ A (k, c) + noise, S with ``active`` non-zeros per row."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.rand(k, c, generator=gen) ** 3  # K, C: sparse-ish, overlapping, >= 0
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, k)
    pick = torch.rand(n, k, generator=gen).argsort(dim=1)[:, :active]  # N, active
    codes.scatter_(1, pick, torch.rand(n, active, generator=gen) + 0.5)
    return codes @ atoms + noise * torch.rand(n, c, generator=gen), atoms


def matched_cosine(truth: torch.Tensor, found: torch.Tensor) -> float:
    """Mean cosine of the best one-to-one matching of rows of truth (K, C) to found (K', C)."""
    a = nn.functional.normalize(truth.double(), dim=1)
    b = nn.functional.normalize(found.double().cpu(), dim=1)
    cos = (a @ b.T).numpy()
    rows, cols = linear_sum_assignment(-cos)
    return float(cos[rows, cols].mean())


def make_tiny_cnn() -> nn.Module:
    """A seeded, untrained 3-channel CNN: features.0 .. features.3, head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        ),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)),
    ).eval()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The test machines are small and shared: one intra-op thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return make_tiny_cnn()


@pytest.fixture
def image_folder(tmp_path):
    """24 small RGB PNGs in nested folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for i in range(24):
        folder = root / f"class{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels, mode="RGB").save(folder / f"img{i:02d}.png")
    return root
