"""Image sources streamed in batches: a folder of images (any nesting) or an in-memory array.

A source is indexed 0..len-1 in a fixed order (a folder's files sorted by relative path), so
an exemplar is an index that can be loaded again to write its PNG. Unreadable files are
skipped with an :class:`UnreadableImageWarning` that names them.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class UnreadableImageWarning(UserWarning):
    """An image file could not be decoded and was skipped."""


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image; an unreadable file raises ValueError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


class ImageFolder:
    """Every image file under ``root`` (recursively), sorted by relative path."""

    def __init__(self, root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {self.root} does not exist")
        exts = {e.lower() for e in extensions}
        self.paths = sorted(
            (p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in exts),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not self.paths:
            raise ValueError(
                f"image folder {self.root} holds no images ({', '.join(sorted(exts))})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, index: int) -> str:
        return self.paths[index].relative_to(self.root).as_posix()

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[index])

    def fingerprint(self) -> str:
        """SHA-256 over relative paths, sizes and modification times (a cache key, cheap)."""
        digest = hashlib.sha256()
        for path in self.paths:
            stat = path.stat()
            rel = path.relative_to(self.root).as_posix()
            digest.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()


class ArrayImages:
    """Images held in memory: uint8 (N, H, W) grayscale or (N, H, W, 3) RGB."""

    def __init__(self, images: np.ndarray, *, name: str = "array"):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(
                f"images must be uint8 (N, H, W[, 3]), got {images.dtype} {images.shape}"
            )
        self.images = images
        self.dataset_name = name

    def __len__(self) -> int:
        return len(self.images)

    def name(self, index: int) -> str:
        return f"{self.dataset_name}[{index}]"

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index], mode="L" if self.images.ndim == 3 else "RGB")

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()


ImageSource = ImageFolder | ArrayImages


def center_square(
    image: Image.Image,
    size: int | None,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> Image.Image:
    """The centred square of ``image``, ``size`` x ``size``: the shorter side resized to
    ``size``, then the longer one cropped evenly, as torchvision's Resize(size) followed by
    CenterCrop(size). ``size=None`` crops the square at the image's own resolution.

    One function for the model's input and for the PNG a participant sees, so that both show
    the same part of the image, undistorted.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be positive, not {size}")
    w, h = image.size
    short = min(w, h)
    if size is not None and short != size:
        # the longer side as torchvision computes it: int(size * long / short)
        w, h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        image = image.resize((w, h), resample)
    side = min(w, h)
    left, top = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
    if (w, h) == (side, side):
        return image
    return image.crop((left, top, left + side, top + side))


@dataclass(frozen=True)
class ImageTransform:
    """PIL image -> float32 tensor (C, size, size): convert, centre square of side ``size``
    (:func:`center_square`, aspect ratio kept), scale to [0, 1], normalize."""

    size: int
    mode: str = "RGB"  # "RGB" (C = 3) or "L" (C = 1)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', not {self.mode!r}")
        image = center_square(image.convert(self.mode), self.size)
        array = np.asarray(image, dtype=np.float32) / 255.0  # H, W[, C]
        x = torch.from_numpy(array.copy())
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # C, H, W
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std


def iter_batches(
    source: ImageSource,
    transform: ImageTransform,
    *,
    batch_size: int = 64,
    indices: Sequence[int] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(index, x)``: int64 (B,) source indices and float32 (B, C, H, W) images.

    Unreadable images are skipped with an :class:`UnreadableImageWarning` naming them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    order = range(len(source)) if indices is None else indices
    kept: list[int] = []
    tensors: list[torch.Tensor] = []
    for i in order:
        try:
            tensors.append(transform(source.load(i)))
        except ValueError as exc:
            warnings.warn(f"skipped unreadable image: {exc}", UnreadableImageWarning, stacklevel=2)
            continue
        kept.append(i)
        if len(kept) == batch_size:
            yield torch.tensor(kept, dtype=torch.int64), torch.stack(tensors)
            kept, tensors = [], []
    if kept:
        yield torch.tensor(kept, dtype=torch.int64), torch.stack(tensors)
