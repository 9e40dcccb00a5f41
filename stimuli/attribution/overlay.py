"""Maps rendered as participants see them: a heatmap blended over the image."""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image

COLORMAP = "jet"


def normalized(heat: np.ndarray) -> np.ndarray:
    """(H, W) map -> [0, 1], negative evidence shown as none, scaled by its maximum."""
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=float)), 0, None)
    top = heat.max() if heat.size else 0.0
    return heat / top if top > 0 else np.zeros_like(heat)


def overlay(image: Image.Image | np.ndarray, heat: np.ndarray, alpha: float = 0.5,
            colormap: str = COLORMAP) -> Image.Image:
    """The image (PIL, or (H, W, 3) uint8 / [0, 1] floats) with the map (h, w), resized to
    the image's size, blended over it in ``colormap``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay: alpha must lie in [0, 1], got {alpha}")
    if isinstance(image, np.ndarray):
        array = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round()
        image = Image.fromarray(array.astype(np.uint8))
    base = np.asarray(image.convert("RGB"), dtype=float) / 255
    heat = np.asarray(heat, dtype=float)
    if heat.ndim != 2:
        raise ValueError(f"overlay: the map must be (H, W), got shape {heat.shape}")
    resized = Image.fromarray((normalized(heat) * 255).round().astype(np.uint8)).resize(
        image.size, Image.Resampling.BILINEAR)
    colours = matplotlib.colormaps[colormap](np.asarray(resized) / 255)[..., :3]
    blended = (1 - alpha) * base + alpha * colours
    return Image.fromarray((blended * 255).round().astype(np.uint8))
