"""Small image datasets for the demo model: Fashion-MNIST from local files, or a procedural one.

Fashion-MNIST is read from ``$FASHION_MNIST_DIR`` or from Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``); nothing is downloaded. Users with internet can
fetch the four ``*-idx?-ubyte.gz`` files from https://github.com/zalandoresearch/fashion-mnist
(``data/fashion``) into a folder and point ``FASHION_MNIST_DIR`` at it.

Without a copy, :func:`procedural_dataset` draws ten classes of noisy shapes so the demo runs.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
PROCEDURAL_CLASSES = (
    "disc", "square", "ring", "cross", "horizontal bars",
    "vertical bars", "diagonal bars", "dots", "triangle", "checkerboard",
)  # fmt: skip


@dataclass(frozen=True)
class ImageDataset:
    """Grayscale images and labels: ``images`` uint8 (N, H, W), ``labels`` int64 (N,)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]


def fashion_mnist_dir() -> Path | None:
    """The first folder holding the Fashion-MNIST files, or None."""
    candidates = [Path(p) for p in [os.environ.get("FASHION_MNIST_DIR")] if p]
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        if _idx_file(folder, "t10k-images-idx3-ubyte") is not None:
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values, found {array.size}")
    return array.reshape(shape)


def load_fashion_mnist(split: str = "train", folder: Path | None = None) -> ImageDataset:
    """Fashion-MNIST ``split`` ("train" or "test") from ``folder`` or the usual places."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = Path(folder) if folder is not None else fashion_mnist_dir()
    if folder is None:
        raise ValueError(
            "no Fashion-MNIST copy found: set FASHION_MNIST_DIR or install dataset-fashion-mnist"
        )
    prefix = "train" if split == "train" else "t10k"
    paths = [
        _idx_file(folder, f"{prefix}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]
    if None in paths:
        raise ValueError(f"{folder}: Fashion-MNIST {split} files are missing")
    images, labels = (_read_idx(p) for p in paths)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    return ImageDataset("fashion-mnist", images, labels.astype(np.int64), FASHION_MNIST_CLASSES)


def procedural_dataset(n: int, *, seed: int = 0, size: int = 28) -> ImageDataset:
    """``n`` noisy grayscale shapes of ten classes (balanced), uint8 (N, size, size)."""
    if n < 1:
        raise ValueError(f"n must be positive, not {n}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(PROCEDURAL_CLASSES)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size  # H, W in [0, 1)
    images = np.empty((n, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(0.35, 0.65, size=2)
        r = rng.uniform(0.18, 0.3)
        freq = rng.uniform(3.0, 5.0)
        phase = rng.uniform(0, 2 * np.pi)
        dy, dx = yy - cy, xx - cx
        shape = _shape(int(label), dy, dx, yy, xx, r, freq, phase)
        contrast = rng.uniform(0.6, 1.0)
        img = contrast * shape + rng.normal(0, 0.08, size=(size, size))
        images[i] = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    return ImageDataset("procedural", images, labels, PROCEDURAL_CLASSES)


def _shape(label, dy, dx, yy, xx, r, freq, phase) -> np.ndarray:  # noqa: PLR0911
    dist = np.sqrt(dy**2 + dx**2)
    inside = (np.abs(dy) < r) & (np.abs(dx) < r)
    if label == 0:
        return (dist < r).astype(float)
    if label == 1:
        return inside.astype(float)
    if label == 2:
        return (np.abs(dist - r) < 0.06).astype(float)
    if label == 3:
        return (((np.abs(dy) < 0.06) | (np.abs(dx) < 0.06)) & (dist < 1.3 * r)).astype(float)
    if label == 4:
        return inside * (np.sin(2 * np.pi * freq * yy + phase) > 0)
    if label == 5:
        return inside * (np.sin(2 * np.pi * freq * xx + phase) > 0)
    if label == 6:
        return inside * (np.sin(2 * np.pi * freq * (xx + yy) / 1.4 + phase) > 0)
    if label == 7:
        return (
            (np.sin(2 * np.pi * freq * xx + phase) > 0.6)
            & (np.sin(2 * np.pi * freq * yy + phase) > 0.6)
        ).astype(float)
    if label == 8:
        return ((dy > -r) & (dy < r) & (np.abs(dx) < (dy + r) / 2)).astype(float)
    return inside * ((np.sin(2 * np.pi * freq * xx) > 0) ^ (np.sin(2 * np.pi * freq * yy) > 0))
