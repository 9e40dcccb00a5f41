"""A small procedural stimulus set, for tests and the demo until a model is at hand.

Each unit "prefers" a colour and grating orientation: its maximally activating images are
noisy gratings near that preference and its minimally activating ones are far from it, so a
human can learn the unit from its references, as in a real 2AFC study. Neurons are made
less distinct than dictionary features (their two extremes differ less in colour), so the
demo study has an effect to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from stimuli.stimulus_set import (
    SCHEMA_VERSION,
    Entry,
    ImageRef,
    Pair,
    StimulusManifest,
    encode_png,
    image_digest,
    write_stimulus_set,
)


def _grating(rng: np.random.Generator, angle: float, hue: np.ndarray, size: int) -> bytes:
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq = rng.uniform(3.0, 6.0)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    noise = rng.normal(0.0, 0.15, size=(size, size))
    lum = np.clip(0.5 + 0.4 * wave + noise, 0, 1)  # H, W
    rgb = np.clip(lum[..., None] * hue[None, None, :] + 0.1, 0, 1)  # H, W, 3
    return encode_png(Image.fromarray((rgb * 255).astype(np.uint8), mode="RGB"))


def build_procedural_set(
    directory: Path,
    *,
    units_per_kind: int = 6,
    kinds: tuple[str, ...] = ("neuron", "nmf"),
    layers: tuple[str, ...] = ("block1", "block2"),
    n_references: int = 9,
    n_queries: int = 4,
    n_catch: int = 1,
    image_size: int = 48,
    seed: int = 0,
) -> str:
    """Write a procedural set to ``directory`` and return its digest."""
    rng = np.random.default_rng(seed)
    images: dict[str, bytes] = {}

    def draw(angle: float, hue: np.ndarray) -> ImageRef:
        data = _grating(rng, angle, hue, image_size)
        digest = image_digest(data)
        images[digest] = data
        return ImageRef(image=digest)

    units = []
    for kind in kinds:
        for layer in layers:
            for i in range(units_per_kind):
                pref = rng.uniform(0, np.pi)
                hue_max = rng.uniform(0.3, 1.0, size=3)
                separation = 0.35 if kind == "neuron" else 1.0
                hue_min = hue_max + (1.2 - 2 * hue_max) * separation

                def sample(
                    extreme: str, _pref: float = pref, _hmax=hue_max, _hmin=hue_min
                ) -> ImageRef:
                    jitter = rng.normal(0, 0.15)
                    if extreme == "max":
                        return draw(_pref + jitter, _hmax)
                    return draw(_pref + np.pi / 2 + jitter, _hmin)

                ref_max = [sample("max") for _ in range(n_references)]
                ref_min = [sample("min") for _ in range(n_references)]
                queries = [Pair(max=sample("max"), min=sample("min")) for _ in range(n_queries)]
                catch = [
                    Pair(max=ref_max[j % n_references], min=ref_min[j % n_references])
                    for j in range(n_catch)
                ]
                roles = {"max_refs": ref_max, "min_refs": ref_min, "queries": queries}
                if catch:
                    roles["catch"] = catch
                units.append(
                    Entry(
                        id=f"{layer}/{kind}/{i}",
                        source=kind,
                        layer=layer,
                        covariates={"importance": round(float(rng.uniform(0, 1)), 6)},
                        explanations={"exemplars": roles},
                    )
                )
    manifest = StimulusManifest(
        schema_version=SCHEMA_VERSION,
        name="procedural",
        provenance={
            "generator": "stimuli.procedural",
            "method": "oriented gratings",
            "seed": seed,
            "params": {
                "units_per_kind": units_per_kind,
                "kinds": list(kinds),
                "layers": list(layers),
                "n_references": n_references,
                "n_queries": n_queries,
                "image_size": image_size,
            },
        },
        entries=units,
    )
    return write_stimulus_set(directory, manifest, images)
