"""The models of the utility scenarios, in the model registry as ``source = "shortcut"``: an
unconstrained CNN (cross-entropy) or a 1-Lipschitz CNN (deel-torchlip layers, hinge
Kantorovich-Rubinstein loss), trained on a shortcut dataset on first use and cached.

What the provenance records of each: its held-out accuracy, its shortcut bias (how often it
follows the shortcut where the shortcut and the shape disagree), its accuracy under an L2
PGD attack, and a numerical lower bound of its Lipschitz constant; for the 1-Lipschitz CNN
also its certified accuracy at the attack's radius.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from stimuli.cache import TensorCache, default_cache_dir, seed_from
from stimuli.lipschitz import (
    certified_radius,
    lipschitz_cnn,
    lipschitz_constant,
    robustness,
    small_cnn,
    train_classifier,
)
from stimuli.model_loaders import LoadedModel, ModelConfig, ModelLoader
from stimuli.shortcuts import ShortcutSpec, make_dataset, shortcut_bias

REVISION = 1  # bump when training or the architectures change what a model computes


class ShortcutModelConfig(ModelConfig):
    source: Literal["shortcut"] = "shortcut"
    layers: list[str] = Field(default_factory=lambda: ["4"], min_length=1)  # for unit builds
    arch: Literal["cnn", "lipschitz"] = "cnn"
    data: ShortcutSpec = Field(default_factory=ShortcutSpec)
    width: int = Field(16, ge=2, le=256)
    train_samples: int = Field(4000, ge=64, le=1_000_000)
    epochs: int = Field(6, ge=1, le=1000)
    test_samples: int = Field(1000, ge=64, le=100_000)
    eps: float = Field(0.5, gt=0, le=100)  # L2 radius of the robustness check


def build_architecture(config: ShortcutModelConfig) -> nn.Module:
    make = small_cnn if config.arch == "cnn" else lipschitz_cnn
    return make(len(config.data.classes), channels=3, width=config.width,
                 size=config.data.size)


def load_shortcut_model(config: ShortcutModelConfig, *, seed: int, cache_dir: Path | None,
                        device: torch.device) -> LoadedModel:
    """The trained model in eval mode (from the cache when it was trained before)."""
    cache = TensorCache(cache_dir or default_cache_dir())
    inputs = {"revision": REVISION, "seed": seed,
              **config.model_dump(mode="json", exclude={"layers", "cls_token"})}
    found = cache.load("shortcut-model", inputs)
    if found is not None:
        model = _plain(build_architecture(config))
        model.load_state_dict(found["state"])
        info = found["info"]
    else:
        train = make_dataset(config.data, config.train_samples, seed=seed_from(seed, "train"))
        torch.manual_seed(seed_from(seed, "init"))
        model = train_classifier(build_architecture(config), train.images, train.labels,
                                 loss="ce" if config.arch == "cnn" else "hkr",
                                 epochs=config.epochs, seed=seed_from(seed, "fit")).model
        test = make_dataset(config.data, config.test_samples, seed=seed_from(seed, "test"))
        with torch.no_grad():
            logits = model(test.images)
        accuracy = float((logits.argmax(1) == test.labels).float().mean())
        info = {
            "source": "shortcut", "name": f"shortcut-{config.arch}", "arch": config.arch,
            "held_out_accuracy": round(accuracy, 6),
            "shortcut_bias": round(float(shortcut_bias(
                lambda x: model(x).argmax(1), config.data, n=config.test_samples,
                seed=seed_from(seed, "bias"))), 6),
            "robustness": {"eps": config.eps, "pgd_accuracy": round(float(robustness(
                model, test.images[:256], test.labels[:256], eps=config.eps)), 6)},
            "lipschitz_estimate": round(float(lipschitz_constant(model, test.images[:64])), 6),
        }
        if config.arch == "lipschitz":
            radius = certified_radius(logits, test.labels)
            info["robustness"]["certified_accuracy"] = round(
                float((radius > config.eps).float().mean()), 6)
        cache.save("shortcut-model", inputs, {"state": model.state_dict(), "info": info})
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec = config.data
    held_out = make_dataset(spec, 256, seed=seed_from(seed, "held-out")).images
    images = (held_out.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return LoadedModel(model, info, classes=list(spec.classes), images=images,
                       images_name=f"shortcut:{spec.shortcut}")


def _plain(model: nn.Module) -> nn.Module:
    """A deel-torchlip model as plain torch layers (same function), so that attribution
    code finds ordinary Conv2d layers; other models unchanged."""
    export = getattr(model, "vanilla_export", None)
    return export() if callable(export) else model


class ShortcutLoader(ModelLoader):
    id = "shortcut"
    Config = ShortcutModelConfig
    description = ("a CNN or 1-Lipschitz CNN trained on a shortcut dataset (on first use, "
                   "cached), with its accuracy, shortcut bias and robustness")

    def load(self, config: ShortcutModelConfig, *, seed, cache_dir, device) -> LoadedModel:
        return load_shortcut_model(config, seed=seed, cache_dir=cache_dir, device=device)
