"""torchvision and timm architectures from a local weights file, end to end (marker ``vision``).

They need the ``vision`` extra's packages, which the main environment cannot import beside
its CPU torch: ``.ci/vision`` runs them in their own environment. Elsewhere they skip with
the reason; in that environment under CI (``ASSAY_VISION=1``, ``CI`` set) a failed import
fails. Models are built with random weights and saved to a temporary file: nothing is
downloaded.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from stimuli.activations import sample_positions
from stimuli.build import build_stimuli
from stimuli.exemplars import ExemplarSearch
from stimuli.images import center_square
from stimuli.importance import unit_importance
from stimuli.models import LayerCapture, load_vision_model, model_checksum
from stimuli.nmf import NMF
from stimuli.stimulus_set import load_stimulus_set


def _missing_libraries() -> str | None:
    """None when torchvision and timm import; else why not."""
    try:
        for name in ("torchvision", "timm"):
            importlib.import_module(name)
    except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision for another torch
        return f"torchvision/timm not importable ({type(exc).__name__}: {exc}); run .ci/vision"
    return None


MISSING = _missing_libraries()
if MISSING and os.environ.get("CI") and os.environ.get("ASSAY_VISION") == "1":
    raise RuntimeError(f"the vision environment must import its libraries: {MISSING}")

pytestmark = [pytest.mark.vision, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

# timm's ViT-Tiny cut down to keep the tests fast: 32 px images in 16 px patches, so
# T = 1 (CLS) + 4 tokens of C = 192 channels, two blocks, ReLU MLPs (non-negative for NMF)
VIT_OPTIONS = {"img_size": 32, "depth": 2, "num_classes": 10, "act_layer": "relu"}


def saved(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def raw_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output as the model made it, captured without our hooks."""
    out = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, o: out.setdefault("t", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["t"]


def batches_of(x: torch.Tensor, size: int = 8):
    for start in range(0, len(x), size):
        yield torch.arange(start, min(start + size, len(x))), x[start : start + size]


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_torchvision_resnet_from_a_local_weights_file(tmp_path, images):
    torchvision_models = importlib.import_module("torchvision.models")
    torch.manual_seed(0)
    original = torchvision_models.get_model("resnet18", weights=None, num_classes=10).eval()
    path = saved(original, tmp_path / "resnet18.pt")
    model = load_vision_model("torchvision", "resnet18", path, options={"num_classes": 10})
    assert not model.training
    assert model_checksum(model) == model_checksum(original)
    with torch.no_grad(), LayerCapture(model, ["layer2", "avgpool"]) as cap:
        logits = model(images)
        expected = original(images)
    assert torch.equal(logits, expected)
    assert cap.outputs["layer2"].shape == (16, 128, 4, 4)
    assert cap.outputs["avgpool"].shape == (16, 512, 1, 1)
    assert torch.equal(cap.outputs["layer2"], raw_output(original, "layer2", images))


@pytest.mark.parametrize("cls_token", [True, False])
def test_timm_vit_token_layer_exemplars_nmf_and_importance(tmp_path, images, cls_token):
    timm = importlib.import_module("timm")
    torch.manual_seed(0)
    original = timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT_OPTIONS)
    path = saved(original.eval(), tmp_path / "vit.pt")
    vit = load_vision_model("timm", "vit_tiny_patch16_224", path, options=VIT_OPTIONS)
    first = 0 if cls_token else 1

    tokens = raw_output(vit, "blocks.1", images)  # N, T, C
    assert tokens.shape == (16, 5, 192)
    with torch.no_grad(), LayerCapture(vit, ["blocks.1"], cls_token=cls_token) as cap:
        vit(images)
    assert torch.equal(cap.outputs["blocks.1"][..., 0], tokens[:, first:].transpose(1, 2))

    hidden = "blocks.0.mlp.act"  # N, 5, 768, >= 0
    positions = sample_positions(
        vit, [hidden], batches_of(images), per_image=4, max_samples=1000,
        generator=torch.Generator().manual_seed(0), cls_token=cls_token,
    )[hidden]
    assert positions.shape == (16 * 4, 768)
    nmf = NMF(6, max_iter=50, random_state=0).fit(positions)
    search = ExemplarSearch(3, cls_token=cls_token).fit(
        vit, {("blocks.1", "neuron"): None, (hidden, "nmf"): nmf.transform}, batches_of(images)
    )
    neurons = tokens[:, first:].mean(dim=1).T  # C, N
    assert torch.allclose(
        search.extremes_[("blocks.1", "neuron")].top_values_, neurons.topk(3).values, atol=1e-5
    )
    raw_hidden = raw_output(vit, hidden, images)[:, first:]  # N, T', 768
    codes = nmf.transform(raw_hidden.reshape(-1, 768)).reshape(16, -1, 6).mean(dim=1).T  # K, N
    found = search.extremes_[(hidden, "nmf")]
    assert found.top_values_.shape == (6, 3)
    assert torch.allclose(found.top_values_, codes.topk(3).values, atol=1e-4)

    importance = unit_importance(vit, "blocks.0", images, [0, 7], cls_token=cls_token)
    with torch.no_grad():
        p = torch.softmax(vit(images), dim=1)
        pred = p.argmax(dim=1, keepdim=True)
        for got, channel in zip(importance, [0, 7], strict=True):

            def zero(_m, _i, out, channel=channel):
                out = out.clone()
                out[:, first:, channel] = 0
                return out

            handle = vit.blocks[0].register_forward_hook(zero)
            q = torch.softmax(vit(images), dim=1)
            handle.remove()
            expected = (p.gather(1, pred) - q.gather(1, pred)).mean()
            assert abs(float(got) - float(expected)) < 1e-5
    features = unit_importance(
        vit, hidden, images, [0, 1], encoder=nmf.transform, dictionary=nmf.get_dictionary(),
        cls_token=cls_token,
    )
    assert features.shape == (2,) and torch.isfinite(features).all()
    # the head reads only the CLS token after the last block (global_pool="token")
    last = unit_importance(vit, "blocks.1", images, [0, 7], cls_token=cls_token)
    assert (last.abs().min() > 1e-6) if cls_token else torch.equal(last, torch.zeros(2))


def test_weights_that_do_not_fit_name_the_file(tmp_path):
    torchvision_models = importlib.import_module("torchvision.models")
    path = saved(torchvision_models.get_model("resnet18", num_classes=10), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=f"^weights in {re.escape(str(path))} do not fit"):
        load_vision_model("torchvision", "resnet18", path)  # 1000 classes
    with pytest.raises(ValueError, match=f"^weights in {re.escape(str(path))} do not fit"):
        load_vision_model("timm", "resnet18", path, options={"num_classes": 7})
    missing = tmp_path / "none.pt"
    with pytest.raises(ValueError, match=f"^weights file {re.escape(str(missing))} does not"):
        load_vision_model("torchvision", "resnet18", missing)
    with pytest.raises(ValueError, match="^cannot build torchvision architecture 'nope'"):
        load_vision_model("torchvision", "nope", path)
    with pytest.raises(ValueError, match="^cannot build timm architecture 'nope'"):
        load_vision_model("timm", "nope", path)


@pytest.mark.parametrize("size", [(40, 24), (24, 40), (33, 50), (32, 32)])
def test_center_square_is_torchvisions_resize_and_center_crop(size):
    transforms = importlib.import_module("torchvision.transforms")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    for side in (16, 21):
        ours = center_square(image, side)
        theirs = transforms.Compose([transforms.Resize(side), transforms.CenterCrop(side)])(image)
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))


# ---------------------------------------------------------------------------------------
# End-to-end build: the build-config format of stimuli/build_config.py as of this commit
# (sources / methods registries, one table per plugin). Update BUILD_TOML when it changes.
BUILD_TOML = """
name = "resnet18-vision-test"
output = "out"
cache_dir = "cache"
seed = 0
sources = ["neuron", "nmf", "sae"]
methods = ["exemplars"]

[model]
source = "torchvision"
arch = "resnet18"
weights = "resnet18.pt"
layers = ["layer1", "layer2"]

[images]
source = "images"
size = 32
mode = "RGB"
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
display_size = 32

[units]
per_layer = 2

[positions]
fit_samples = 2000
per_image = 8

[nmf]
n_components = 6

[sae]
n_components = 6
epochs = 3

[exemplars]
n_buckets = 2
n_reference_batches = 1
n_query_batches = 2
subset_size = 20

[importance]
n_images = 8
"""
# ---------------------------------------------------------------------------------------


def test_a_stimulus_set_from_a_torchvision_resnet(tmp_path):
    torchvision_models = importlib.import_module("torchvision.models")
    torch.manual_seed(0)
    saved(torchvision_models.get_model("resnet18", weights=None), tmp_path / "resnet18.pt")
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(40):  # non-square, each a random colour with a random bright square
        pixels = np.full((30, 40, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        y, x = rng.integers(0, 20, 2)
        pixels[y : y + 10, x : x + 10] = rng.integers(128, 256, 3)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i:02d}.png")
    config = tmp_path / "build.toml"
    config.write_text(BUILD_TOML)

    digest = build_stimuli(config)
    stimulus_set = load_stimulus_set(tmp_path / "out")
    assert stimulus_set.digest == digest
    counts: dict[tuple[str, str], int] = {}
    for entry in stimulus_set.manifest.entries:
        counts[(entry.layer, entry.source)] = counts.get((entry.layer, entry.source), 0) + 1
        assert isinstance(entry.covariates["importance"], float)
        assert len(entry.role("exemplars", "max_refs")) == 2 + 1  # with the catch image
        assert len(entry.role("exemplars", "queries")) == 2
    expected = {(layer, kind): 2 for layer in ("layer1", "layer2") for kind in
                ("neuron", "nmf", "sae")}
    assert counts == expected
    assert stimulus_set.manifest.provenance["model"]["name"] == "resnet18"
