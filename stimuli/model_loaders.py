"""Where a build's model comes from: the bundled demo CNN, a ``package.module:callable``
factory, or a torchvision / timm architecture with a local weights file.

Each loader is a small class with an ``id`` and a pydantic ``Config`` (the build file's
``[model]`` table, told apart by ``source = "<id>"``) whose ``load`` returns the model in
eval mode, what the provenance records of it, the class names when it knows them, and
images to explain it on when it brings its own (the demo's held-out set). Nothing is
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from stimuli.demo_model import load_demo_model
from stimuli.models import load_factory_model, load_vision_model


class ModelConfig(BaseModel):
    """Options every loader shares: the layers to explain and how token layers are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[str] = Field(min_length=1)
    # (N, T, C) token layers: whether the first (CLS) token counts as a position like the others
    cls_token: bool = True


@dataclass
class LoadedModel:
    model: nn.Module
    info: dict  # for the provenance: source, name, ...
    classes: list[str] | None = None
    images: np.ndarray | None = None  # uint8 (N, H, W[, 3]) images that come with the model
    images_name: str = ""


class ModelLoader:
    id: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    description: ClassVar[str] = ""

    def load(self, config: ModelConfig, *, seed: int, cache_dir: Path | None,
             device: torch.device) -> LoadedModel:
        raise NotImplementedError


class DemoConfig(ModelConfig):
    source: Literal["demo"] = "demo"
    data: Literal["auto", "fashion-mnist", "procedural"] = "auto"
    train_samples: int = Field(60000, ge=1)
    epochs: int = Field(2, ge=1)


class DemoLoader(ModelLoader):
    """The small demo CNN, trained on first use (Fashion-MNIST, else procedural) and cached."""

    id = "demo"
    Config = DemoConfig
    description = "the bundled demo CNN, trained on first use and cached"

    def load(self, config: DemoConfig, *, seed, cache_dir, device) -> LoadedModel:
        demo = load_demo_model(data=config.data, train_samples=config.train_samples,
                               epochs=config.epochs, seed=seed, cache_dir=cache_dir, device=device)
        info = {"source": "demo", "name": "DemoCNN", "data": demo.dataset.name,
                "held_out_accuracy": float(f"{demo.accuracy:.6g}")}
        return LoadedModel(demo.model, info, classes=list(demo.dataset.classes),
                           images=demo.dataset.images, images_name="demo")


class FactoryConfig(ModelConfig):
    source: Literal["factory"] = "factory"
    factory: str = Field(min_length=3)  # "package.module:callable"
    weights: Path | None = None  # a local state dict, loaded after the factory builds the model
    classes: list[str] | None = None  # class names of the output units, if known


class FactoryLoader(ModelLoader):
    id = "factory"
    Config = FactoryConfig
    description = "any nn.Module from a 'package.module:callable', with optional local weights"

    def load(self, config: FactoryConfig, *, seed, cache_dir, device) -> LoadedModel:
        model = load_factory_model(config.factory, config.weights)
        return LoadedModel(model, {"source": "factory", "name": config.factory},
                           classes=config.classes)


class VisionConfig(ModelConfig):
    arch: str = Field(min_length=1)
    weights: Path  # a local state dict; nothing is downloaded
    classes: list[str] | None = None
    # the architecture builder's arguments (num_classes; timm: img_size, depth...), as the
    # weights were saved with
    options: dict[str, Any] = Field(default_factory=dict)


class TorchvisionConfig(VisionConfig):
    source: Literal["torchvision"] = "torchvision"


class TimmConfig(VisionConfig):
    source: Literal["timm"] = "timm"


class TorchvisionLoader(ModelLoader):
    id = "torchvision"
    Config = TorchvisionConfig
    description = "a torchvision architecture with local weights (the 'vision' extra)"

    def load(self, config: TorchvisionConfig, *, seed, cache_dir, device) -> LoadedModel:
        model = load_vision_model("torchvision", config.arch, config.weights,
                                  options=config.options)
        return LoadedModel(model, {"source": "torchvision", "name": config.arch},
                           classes=config.classes)


class TimmLoader(ModelLoader):
    id = "timm"
    Config = TimmConfig
    description = "a timm architecture with local weights (the 'vision' extra)"

    def load(self, config: TimmConfig, *, seed, cache_dir, device) -> LoadedModel:
        model = load_vision_model("timm", config.arch, config.weights, options=config.options)
        return LoadedModel(model, {"source": "timm", "name": config.arch}, classes=config.classes)
