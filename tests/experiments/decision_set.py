"""A small decision stimulus set built by hand, for the utility paradigm's tests: what a
decision build writes (manifest v2 ``decision`` entries: an image, the model's decision,
and per method an ``explanation`` with its map), without a model.

The "model" decides by the colour of a patch in the top-left corner (red: class A, blue:
B); a grey square sits elsewhere at random. The methods are named as the utility demo
study's conditions name them: ``gradcam`` and ``lowpass`` map the corner (they explain the
decision), ``saliency`` maps the square (it points at the wrong thing). Half the images are
for learning, half for evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from stimuli.stimulus_set import (
    SCHEMA_VERSION,
    encode_png,
    image_digest,
    parse_manifest,
    write_stimulus_set,
)

SIZE = 32
CLASSES = ("A", "B")
SOURCE = "biased"
EXPLAINING = ("gradcam", "lowpass")  # map the patch the decision depends on
MISLEADING = ("saliency",)  # map the square


def _png(array: np.ndarray) -> bytes:
    image = Image.fromarray((array.clip(0, 1) * 255).round().astype(np.uint8))
    return encode_png(image.resize((96, 96), Image.Resampling.NEAREST))


def build_decision_set(directory: Path, *, seed: int = 0, n: int = 96) -> str:
    """Write the set into ``directory``; returns its digest."""
    rng = np.random.default_rng(seed)
    images: dict[str, bytes] = {}

    def add(array: np.ndarray) -> str:
        data = _png(array)
        images[image_digest(data)] = data
        return image_digest(data)

    entries = []
    for i in range(n):
        decision = i % 2
        x = np.full((SIZE, SIZE, 3), 0.5) + rng.normal(0, 0.04, (SIZE, SIZE, 3))
        x[:8, :8] = (0.85, 0.2, 0.2) if decision == 0 else (0.2, 0.2, 0.85)
        r, c = rng.integers(12, SIZE - 8, size=2)
        x[r:r + 6, c:c + 6] = 0.15
        patch, square = np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE))
        patch[:8, :8] = 1.0
        square[r:r + 6, c:c + 6] = 1.0
        maps = {**dict.fromkeys(EXPLAINING, patch), **dict.fromkeys(MISLEADING, square)}
        roles = {}
        for method, heat in maps.items():
            heat = heat + rng.uniform(0, 0.1, heat.shape)
            shown = 0.5 * x + 0.5 * np.stack([heat, np.zeros_like(heat), 1 - heat], axis=2)
            roles[method] = {"explanation": [{
                "image": add(shown), "map": add(np.repeat(heat[:, :, None], 3, axis=2)),
                "meta": {"deletion": float(rng.uniform(0, 0.5)),
                         "insertion": float(rng.uniform(0.5, 1)),
                         "mufidelity": float(rng.uniform(-1, 1))}}]}
        entries.append({
            "id": f"img{i:03d}", "type": "decision", "source": SOURCE, "layer": "",
            "covariates": {"decision": CLASSES[decision], "label": CLASSES[decision],
                           "phase": "learning" if i < n // 2 else "evaluation"},
            "stimulus": {"image": add(x)}, "explanations": roles})
    manifest = parse_manifest({"schema_version": SCHEMA_VERSION, "name": "test-decisions",
                               "provenance": {"seed": seed, "classes": list(CLASSES)},
                               "entries": entries})
    return write_stimulus_set(directory, manifest, images)
