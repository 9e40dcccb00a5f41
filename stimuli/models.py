"""Any ``nn.Module`` plus layer names: forward hooks that capture (or edit) a layer's output.

Unit code sees every layer channels-first, whatever its layout: a convolution's (N, C, H, W)
and a linear layer's (N, C) as they are, a transformer's tokens (N, T, C) as (N, C, T', 1)
(T' = T, or T - 1 with the first, CLS, token left out). :func:`channels_first` and
:func:`restore_layout` convert at the hook, so pooling, position sampling, encoding and
importance edits are written once for all three.

Also loaders for optional architectures (torchvision, timm) from a local weights file, and a
checksum of a model's parameters for provenance. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def channels_first(output: object, name: str = "", *, cls_token: bool = True) -> torch.Tensor:
    """A layer's output as units see it: (N, C, H, W) and (N, C) as they are, tokens
    (N, T, C) as (N, C, T', 1), a view (any 3-D output is read as tokens).

    ``cls_token=False`` leaves token 0 out (T' = T - 1): a CLS token summarises the image
    rather than showing a place in it, so it should not be pooled, sampled or encoded.
    """
    layer = f"layer {name!r}" if name else "the layer"
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"{layer} returns {type(output).__name__}, not a single tensor; "
            "choose a submodule that returns one"
        )
    if output.ndim not in (2, 3, 4):
        raise ValueError(
            f"{layer} returns shape {tuple(output.shape)}; expected (N, C), tokens (N, T, C) "
            "or (N, C, H, W)"
        )
    if output.ndim != 3:
        return output
    tokens = output if cls_token else output[:, 1:]  # N, T', C
    if tokens.shape[1] == 0:
        raise ValueError(f"{layer} has a single token; cls_token=False leaves none")
    return tokens.transpose(1, 2).unsqueeze(3)  # N, C, T', 1


def restore_layout(
    edited: torch.Tensor, output: torch.Tensor, *, cls_token: bool = True
) -> torch.Tensor:
    """The inverse of :func:`channels_first`: an edited channels-first map back in the
    layout of ``output``, the layer's original output (whose CLS token is put back
    untouched when ``cls_token`` is False)."""
    expected = channels_first(output, cls_token=cls_token).shape
    if edited.shape != expected:
        raise ValueError(
            f"an edit returned shape {tuple(edited.shape)}, expected {tuple(expected)}"
        )
    if output.ndim != 3:
        return edited
    tokens = edited.squeeze(3).transpose(1, 2)  # N, T', C
    return tokens if cls_token else torch.cat([output[:, :1], tokens.to(output)], dim=1)


class LayerCapture:
    """Captures the outputs of named layers during a forward pass, channels first.

    Use as a context manager: inside it, every forward pass of ``model`` stores each layer's
    output in ``outputs[name]`` (the latest pass only; nothing accumulates), as
    :func:`channels_first` gives it::

        with LayerCapture(model, ["block2"]) as cap:
            model(x)
            acts = cap.outputs["block2"]   # N, C, H, W; N, C; or N, C, T', 1 for tokens
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, cls_token: bool = True):
        self.model = model
        self.layers = list(layers)
        self.cls_token = cls_token
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerCapture:
        modules = [get_layer(self.model, name) for name in self.layers]  # validate all first
        for name, module in zip(self.layers, modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            acts = channels_first(output, name, cls_token=self.cls_token)
            self.outputs[name] = acts.detach()

        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def edit_layer(
    model: nn.Module,
    name: str,
    edit: Callable[[torch.Tensor], torch.Tensor],
    *,
    cls_token: bool = True,
) -> Iterator[None]:
    """Replace the layer's output by ``edit(output)`` during forward passes inside the block.

    ``edit`` sees and returns the channels-first map (:func:`channels_first`); the model gets
    it back in the layer's own layout, with an excluded CLS token left as it was.
    """
    module = get_layer(model, name)

    def hook(_module: nn.Module, _inputs: tuple, output: object) -> torch.Tensor:
        acts = channels_first(output, name, cls_token=cls_token)
        return restore_layout(edit(acts), output, cls_token=cls_token)

    handle = module.register_forward_hook(hook)
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
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
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


def load_vision_model(
    library: str, arch: str, weights: Path, *, options: Mapping[str, Any] | None = None
) -> nn.Module:
    """A torchvision or timm architecture with weights from a local file (never downloaded).

    ``library`` is ``"torchvision"`` or ``"timm"``; the package must be installed (the
    ``vision`` extra). ``weights`` is a state dict saved with ``torch.save``. ``options`` go
    to the architecture's builder (``num_classes``; for timm also e.g. ``img_size``) and must
    match those the weights were saved with.
    """
    if library not in ("torchvision", "timm"):
        raise ValueError(f"library must be 'torchvision' or 'timm', not {library!r}")
    try:
        lib = importlib.import_module("torchvision.models" if library == "torchvision" else "timm")
    except ImportError as exc:
        raise ValueError(
            f"{library} is not importable ({exc}); install the 'vision' extra to use it"
        ) from None
    options = dict(options or {})
    try:
        if library == "torchvision":
            model = lib.get_model(arch, weights=None, **options)
        else:
            model = lib.create_model(arch, pretrained=False, **options)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot build {library} architecture {arch!r}: {exc}") from None
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
