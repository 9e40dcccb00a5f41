"""A small drawing stimulus set built by hand, for the drawing paradigms' tests: what the
``drawings`` method writes (manifest v2 ``category`` entries: an exemplar, and under
``drawings`` one role per drawer), with random stroke images of dark ink on white.

Categories differ in how many strokes they have (two more each), so even an observer that
sees only an image's mean colour can tell them apart; the ``human`` drawings jitter the
exemplar's strokes, the models' add a thicker stroke too, so they stray further from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stimuli.stimulus_set import (
    SCHEMA_VERSION,
    encode_png,
    image_digest,
    parse_manifest,
    write_stimulus_set,
)

SIZE = 64
DRAWERS = ("human", "kl", "vq", "prototype")
SOURCE = "hershey"  # the corpus of the demo study's condition


def _png(strokes: np.ndarray, widths: list[int]) -> bytes:
    img = Image.new("L", (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(img)
    for (x0, y0, x1, y1), width in zip(strokes, widths, strict=True):
        draw.line([(x0, y0), (x1, y1)], fill=20, width=width)
    return encode_png(img)


def _strokes(rng: np.random.Generator, n: int, length: float) -> np.ndarray:
    """n straight strokes of one length at random places and angles: (n, 4) x0, y0, x1, y1."""
    start = rng.uniform(length / 2 + 2, SIZE - length / 2 - 2, size=(n, 2))
    angle = rng.uniform(0, np.pi, size=n)
    half = length / 2 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return np.hstack([start - half, start + half])


def build_drawing_set(directory: Path, *, seed: int = 0, n_categories: int = 8,
                      drawers: tuple[str, ...] = DRAWERS, per_drawer: int = 4,
                      source: str = SOURCE) -> str:
    """Write the set into ``directory``; returns its digest."""
    rng = np.random.default_rng(seed)
    images: dict[str, bytes] = {}

    def add(strokes: np.ndarray, extra: int = 0) -> dict:
        data = _png(strokes, [2] * (len(strokes) - extra) + [3] * extra)
        images[image_digest(data)] = data
        return {"image": image_digest(data)}

    entries = []
    for c in range(n_categories):
        strokes = _strokes(rng, 2 + 3 * c, 24.0)
        roles = {}
        for drawer in drawers:
            roles[drawer] = []
            for _ in range(per_drawer):
                drawn = strokes + rng.normal(0, 0.5, size=strokes.shape)
                extra = int(drawer != "human")
                if extra:
                    drawn = np.vstack([drawn, _strokes(rng, 1, 20.0)])
                ref = add(drawn, extra)
                roles[drawer].append({**ref, "meta": {"originality": float(rng.uniform())}})
        alphabet = ("latin", "greek")[c % 2]
        entries.append({"id": f"{alphabet}/c{c}", "type": "category", "source": source,
                        "layer": "", "covariates": {"alphabet": alphabet},
                        "stimulus": add(strokes), "explanations": {"drawings": roles}})
    manifest = parse_manifest({"schema_version": SCHEMA_VERSION, "name": "test-drawings",
                               "provenance": {"seed": seed}, "entries": entries})
    return write_stimulus_set(directory, manifest, images)
