"""Any ``nn.Module`` plus layer names: forward hooks that capture (or edit) a layer's output.

Also loaders for optional architectures (torchvision, timm) from a local weights file, and a
checksum of a model's parameters for provenance. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the model's submodules, as ``model.named_modules()`` gives them (root left out)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` ("" is the model itself, whose output is the logits); an
    unknown name raises ValueError listing the available ones."""
    modules = dict(model.named_modules())
    if name not in modules:
        available = ", ".join(layer_names(model))
        raise ValueError(f"unknown layer {name!r}; available layers: {available}")
    return modules[name]


class LayerCapture:
    """Captures the outputs of named layers during a forward pass.

    Use as a context manager: inside it, every forward pass of ``model`` stores each layer's
    output tensor in ``outputs[name]`` (the latest pass only; nothing accumulates)::

        with LayerCapture(model, ["block2"]) as cap:
            model(x)
            acts = cap.outputs["block2"]   # N, C, H, W (or N, C for a linear layer)
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model = model
        self.layers = list(layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerCapture:
        modules = [get_layer(self.model, name) for name in self.layers]  # validate all first
        for name, module in zip(self.layers, modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"layer {name!r} does not return a single tensor")
            self.outputs[name] = output.detach()

        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def edit_layer(
    model: nn.Module, name: str, edit: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the layer's output by ``edit(output)`` during forward passes inside the block."""
    module = get_layer(model, name)
    handle = module.register_forward_hook(lambda _m, _i, out: edit(out))
    try:
        yield
    finally:
        handle.remove()


def model_checksum(model: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of the model's state dict."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_factory_model(factory: str, weights: Path | None = None) -> nn.Module:
    """Build a model from ``"package.module:callable"`` and load a local state dict if given."""
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model factory {factory!r} must look like 'package.module:callable'")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import model factory {factory!r}: {exc}") from None
    model = builder()
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model factory {factory!r} returned {type(model).__name__}, not nn.Module"
        )
    if weights is not None:
        _load_weights(model, Path(weights))
    return model.eval()


def load_vision_model(library: str, arch: str, weights: Path) -> nn.Module:
    """A torchvision or timm architecture with weights from a local file (never downloaded).

    ``library`` is ``"torchvision"`` or ``"timm"``; the package must be installed (the
    ``vision`` extra). ``weights`` is a state dict saved with ``torch.save``.
    """
    if library not in ("torchvision", "timm"):
        raise ValueError(f"library must be 'torchvision' or 'timm', not {library!r}")
    try:
        lib = importlib.import_module("torchvision.models" if library == "torchvision" else "timm")
    except ImportError as exc:
        raise ValueError(
            f"{library} is not importable ({exc}); install the 'vision' extra to use it"
        ) from None
    if library == "torchvision":
        model = lib.get_model(arch, weights=None)
    else:
        model = lib.create_model(arch, pretrained=False)
    _load_weights(model, Path(weights))
    return model.eval()


def _load_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"weights in {path} do not fit the model: {exc}") from None
    log.info("loaded weights from %s", path)
