"""Loaders for the corpora of people's drawings that researchers bring (``human=True``):
Omniglot in its released folder layout, and QuickDraw-FS as the few-shot release's
``.npz`` (or a flat ``.npz`` of images and labels). Nothing here downloads anything.

Letters: N drawings, C categories, K drawings per category, H, W input sides, S output side.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stimuli.drawings.corpus import Category, DrawingCorpus, Split

OMNIGLOT_SPLITS: tuple[Split, ...] = ("background", "evaluation")
QUICKDRAW_FS_BACKGROUND = 550  # the release's first 550 categories train, the rest test
_OMNIGLOT_FILE = re.compile(r"^\d+_(\d+)\.png$")


class CorpusError(ValueError):
    """A corpus's files are missing, laid out wrongly, or unreadable (the message names
    the file)."""


def resize(ink: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) -> (S, S) with Lanczos resampling (what the paper's loaders use)."""
    if ink.shape == (size, size):
        return ink
    return np.asarray(Image.fromarray(ink).resize((size, size), Image.Resampling.LANCZOS))


def omniglot_corpus(root: Path, size: int = 48) -> DrawingCorpus:
    """Omniglot from ``root/images_{background,evaluation}/<Alphabet>/<characterNN>/
    <xxxx_yy>.png`` (105 x 105, black strokes on white; either folder may be absent, not
    both). The released split is kept (it is by alphabet); ``yy`` (the 20 people) is the
    drawer; images are inverted to ink 255 on 0 and resized to ``size``."""
    root = Path(root)
    folders = [(root / f"images_{split}", split) for split in OMNIGLOT_SPLITS]
    if not any(folder.is_dir() for folder, _ in folders):
        raise CorpusError(
            f"{root} has neither images_background/ nor images_evaluation/ (Omniglot layout: "
            "images_background/<Alphabet>/<character01>/<xxxx_yy>.png)")
    images, labels, drawers, categories = [], [], [], []
    for folder, split in folders:
        if not folder.is_dir():
            continue
        alphabets = sorted(p for p in folder.iterdir() if p.is_dir())
        if not alphabets:
            raise CorpusError(f"{folder} has no alphabet folders")
        for alphabet in alphabets:
            if any(c.alphabet == alphabet.name for c in categories):
                raise CorpusError(f"alphabet {alphabet.name} is in both Omniglot splits")
            characters = sorted(p for p in alphabet.iterdir() if p.is_dir())
            if not characters:
                raise CorpusError(f"{alphabet} has no character folders")
            for character in characters:
                files = sorted(character.glob("*.png"))
                if not files:
                    raise CorpusError(f"{character} has no .png drawings")
                label = len(categories)
                categories.append(Category(f"{alphabet.name}/{character.name}",
                                           alphabet.name, split))
                for path in files:
                    match = _OMNIGLOT_FILE.match(path.name)
                    if match is None:
                        raise CorpusError(f"{path}: expected a name like 0709_01.png "
                                          "(drawing id _ drawer)")
                    images.append(resize(255 - _read_gray(path), size))
                    labels.append(label)
                    drawers.append(int(match.group(1)))
    return DrawingCorpus(
        name="omniglot", images=np.stack(images), labels=np.array(labels, dtype=np.int64),
        drawers=np.array(drawers, dtype=np.int64), categories=tuple(categories), human=True)


def _read_gray(path: Path) -> np.ndarray:
    """uint8 (H, W) of a PNG, 0 black to 255 white."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise CorpusError(f"{path}: unreadable image ({exc})") from exc


def quickdraw_fs_corpus(path: Path, size: int = 48, n_background: int | None = None,
                        per_category: int | None = None, name: str = "quickdraw",
                        ) -> DrawingCorpus:
    """QuickDraw-FS from an ``.npz`` in one of two layouts:

    - the release's (serre-lab/LatentMatters ``all_qd_fs*.npz``): ``data`` (C, K, H, W),
      K drawings of each of C categories; the first ``n_background`` categories (550 by
      default, as the release's loaders split them) are background, the rest evaluation;
    - flat: ``images`` (N, H, W) and ``labels`` (N,), with an optional ``split`` (N,) of
      "background"/"evaluation" (one per category), else the split by ``n_background``
      (labels below it are background); optional ``names`` (C,) and ``drawers`` (N,).

    Each QuickDraw drawing is a different anonymous player's, so drawers default to
    0..N-1. Float images in [0, 1] are scaled to 0..255, and images on white paper (the
    mean border above 127) are inverted, so ink is 255 on 0. ``per_category`` keeps the
    first K drawings of each category (the release holds hundreds per category)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"QuickDraw-FS file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path}: not a readable .npz ({exc})") from exc
    if "data" in arrays:
        data = arrays["data"]
        if data.ndim != 4:
            raise CorpusError(f"{path}: 'data' must be (categories, drawings, H, W), got "
                              f"shape {data.shape}")
        data = data[:, :per_category]
        images = data.reshape(-1, *data.shape[2:])  # (C*K, H, W)
        labels = np.repeat(np.arange(data.shape[0]), data.shape[1])
        splits = drawers = None
    elif "images" in arrays and "labels" in arrays:
        images, labels = arrays["images"], arrays["labels"].astype(np.int64)
        if images.ndim != 3 or labels.shape != (len(images),):
            raise CorpusError(f"{path}: need images (N, H, W) and labels (N,), got "
                              f"{images.shape} and {labels.shape}")
        splits, drawers = arrays.get("split"), arrays.get("drawers")
        for key, value in (("split", splits), ("drawers", drawers)):
            if value is not None and value.shape != labels.shape:
                raise CorpusError(f"{path}: '{key}' must be (N,) like labels, got {value.shape}")
        if per_category is not None:
            keep = _rank_within(labels) < per_category
            images, labels = images[keep], labels[keep]
            splits = splits[keep] if splits is not None else None
            drawers = drawers[keep] if drawers is not None else None
    else:
        raise CorpusError(f"{path}: expected 'data' (C, K, H, W) or 'images' and 'labels'; "
                          f"found {sorted(arrays)}")
    if labels.size == 0 or labels.min() < 0:
        raise CorpusError(f"{path}: no drawings, or negative labels")
    n_categories = int(labels.max()) + 1
    split_of = _category_splits(path, labels, splits, n_categories,
                                QUICKDRAW_FS_BACKGROUND if n_background is None
                                and "data" in arrays else n_background)
    names = [str(n) for n in arrays["names"]] if "names" in arrays else [
        f"{c:03d}" for c in range(n_categories)]
    if len(names) != n_categories:
        raise CorpusError(f"{path}: {len(names)} names for {n_categories} categories")
    drawers = drawers if drawers is not None else np.arange(len(labels))
    categories = tuple(Category(f"{name}/{names[c]}", f"{name}-{split_of[c]}", split_of[c])
                       for c in range(n_categories))
    ink = _ink(images, path)
    return DrawingCorpus(
        name=name, images=np.stack([resize(image, size) for image in ink]),
        labels=labels.astype(np.int64), drawers=np.asarray(drawers, dtype=np.int64),
        categories=categories, human=True)


def _rank_within(labels: np.ndarray) -> np.ndarray:
    """Each drawing's position among its category's drawings, in file order."""
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels[order])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts
    return rank


def _category_splits(path: Path, labels: np.ndarray, splits: np.ndarray | None,
                     n_categories: int, n_background: int | None) -> list[Split]:
    if splits is None:
        if n_background is None:
            raise CorpusError(f"{path}: no 'split' array: pass n_background (labels below "
                              "it are background)")
        if not 0 < n_background < n_categories:
            raise CorpusError(f"{path}: n_background={n_background} leaves no background or "
                              f"no evaluation category among {n_categories}")
        return ["background" if c < n_background else "evaluation"
                for c in range(n_categories)]
    found: dict[int, str] = {}
    for label, split in zip(labels.tolist(), splits.astype(str).tolist(), strict=True):
        if split not in OMNIGLOT_SPLITS:
            raise CorpusError(f"{path}: split {split!r} is neither background nor evaluation")
        if found.setdefault(label, split) != split:
            raise CorpusError(f"{path}: category {label} is in both splits")
    return [found.get(c, "background") for c in range(n_categories)]  # type: ignore[misc]


def _ink(images: np.ndarray, path: Path) -> np.ndarray:
    """uint8 (N, H, W), ink 255 on paper 0."""
    if np.issubdtype(images.dtype, np.floating):
        if images.min() < 0 or images.max() > 1:
            raise CorpusError(f"{path}: float images must lie in [0, 1]")
        images = np.round(images * 255).astype(np.uint8)
    elif images.dtype != np.uint8:
        raise CorpusError(f"{path}: images must be uint8 or float, got {images.dtype}")
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]],
                            axis=1)
    return 255 - images if border.mean() > 127 else images
