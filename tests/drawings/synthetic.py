"""A synthetic corpus of one-shot categories for the drawing models' tests and timings:
each category is a few random strokes, each drawing of it the same strokes with their
points jittered and the whole slightly shifted and scaled."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from stimuli.drawings.corpus import Category, DrawingCorpus


def synthetic_corpus(categories: int = 8, per_category: int = 30, size: int = 16, *,
                     evaluation: int = 0, strokes: int = 3, jitter: float = 0.04,
                     seed: int = 0) -> DrawingCorpus:
    """``categories`` categories of ``per_category`` drawings (uint8 (N, S, S)); the last
    ``evaluation`` categories are in the evaluation split."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    supersample = 4
    big = size * supersample
    width = max(1, round(big * 0.08))
    for c in range(categories):
        shape = [rng.uniform(0.15, 0.85, size=(rng.integers(2, 5), 2)) for _ in range(strokes)]
        for _ in range(per_category):
            scale, shift = rng.uniform(0.9, 1.1), rng.normal(0, 0.03, size=2)
            canvas = Image.new("L", (big, big), 0)
            pen = ImageDraw.Draw(canvas)
            for points in shape:
                moved = (points - 0.5) * scale + 0.5 + shift
                moved = moved + rng.normal(0, jitter, size=points.shape)
                pen.line([tuple(p) for p in moved * big], fill=255, width=width, joint="curve")
            images.append(np.asarray(canvas.resize((size, size), Image.BILINEAR)))
            labels.append(c)
    cats = tuple(Category(f"synthetic/{c}", f"alphabet{c}",
                          "evaluation" if c >= categories - evaluation else "background")
                 for c in range(categories))
    return DrawingCorpus(name=f"synthetic-{seed}", images=np.stack(images).astype(np.uint8),
                         labels=np.asarray(labels, dtype=np.int64),
                         drawers=np.zeros(len(labels), dtype=np.int64), categories=cats,
                         human=False)
