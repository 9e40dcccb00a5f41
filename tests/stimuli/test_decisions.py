"""Decision builds (the utility benchmark's stimulus sets): a shortcut model's decisions on
new images, each explained by every listed method, with the model's accuracy, bias and
robustness, the low-pass cut-off and CRAFT's concepts in the provenance."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from stimuli.build import build_stimuli
from stimuli.build_config import BuildConfigError, load_build_config
from stimuli.decisions.models import ShortcutModelConfig, load_shortcut_model
from stimuli.stimulus_set import load_stimulus_set

SMALL = """
name = "test-decisions"
output = "out"
cache_dir = "cache"
seed = 3
methods = ["saliency", "lowpass", "craft"]

[model]
source = "shortcut"
train_samples = 600
epochs = 2
test_samples = 128

[model.data]
core_availability = 0.3

[scenario]
learning = 8
evaluation = 8
display_size = 64

[faithfulness]
steps = 4
subsets = 8

[lowpass]
cutoffs = [0.25, 1.0]
held_out = 8

[craft]
n_concepts = 3
n_crops = 32
n_designs = 8
images_per_class = 16
"""


def write(folder: Path, text: str = SMALL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "build.toml").write_text(text)
    return folder / "build.toml"


def test_a_decision_build_explains_every_decision_with_every_method(tmp_path):
    digest = build_stimuli(write(tmp_path))
    stimulus_set = load_stimulus_set(tmp_path / "out")
    manifest = stimulus_set.manifest
    entries = manifest.entries
    assert len(entries) == 16 and {e.type for e in entries} == {"decision"}
    assert sorted(e.covariates["phase"] for e in entries) == ["evaluation"] * 8 + ["learning"] * 8
    for entry in entries:
        assert set(entry.explanations) == {"saliency", "lowpass", "craft"}
        assert entry.covariates["decision"] in ("A", "B")
        for roles in entry.explanations.values():
            (ref,) = roles["explanation"]
            assert ref.map and set(ref.meta) == {"deletion", "insertion", "mufidelity"}
            assert 0 <= ref.meta["deletion"] <= 1 and 0 <= ref.meta["insertion"] <= 1
    # CRAFT shows its concept's crops beside the map: a wider picture than the others'
    first = entries[0].explanations
    craft, saliency = (Image.open(io.BytesIO(stimulus_set.images[
        first[m]["explanation"][0].image])) for m in ("craft", "saliency"))
    assert craft.width > saliency.width == 64
    info = manifest.provenance["model"]
    assert {"held_out_accuracy", "shortcut_bias", "robustness", "lipschitz_estimate"} <= set(info)
    details = manifest.provenance["method_details"]
    assert details["lowpass"]["cutoff"] in (0.25, 1.0)
    assert set(details["craft"]["importance"]) <= {"A", "B"} and details["craft"]["importance"]
    # half the images set the colour against the shape; the model's decisions are recorded
    assert sum(e.covariates["conflict"] for e in entries) == 8
    assert build_stimuli(write(tmp_path / "again"), tmp_path / "out2") != "" and \
        load_stimulus_set(tmp_path / "out2").manifest.entries == entries
    assert digest == load_stimulus_set(tmp_path / "out").digest


def test_the_lipschitz_model_records_its_certified_accuracy(tmp_path):
    config = ShortcutModelConfig(arch="lipschitz", train_samples=200, epochs=1,
                                 test_samples=64, data={"size": 16})
    loaded = load_shortcut_model(config, seed=0, cache_dir=tmp_path, device=torch.device("cpu"))
    info = loaded.info
    assert 0 <= info["robustness"]["certified_accuracy"] <= info["robustness"]["pgd_accuracy"]
    assert info["lipschitz_estimate"] <= 1.0 + 1e-4
    again = load_shortcut_model(config, seed=0, cache_dir=tmp_path, device=torch.device("cpu"))
    assert again.info == info  # from the cache, the same model
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(again.model(x), loaded.model(x))


@pytest.mark.parametrize("change, message", [
    (('methods = ["saliency", "lowpass", "craft"]', 'methods = ["saliency", "lime"]'),
     "methods.1: 'lime' does not explain decisions (known: saliency, smoothgrad, "
     "integrated_gradients, gradcam, occlusion, rise, lowpass, wam, craft)"),
    (("held_out = 8", "held_out = 8\nwindow = 3"), "lowpass.window: Extra inputs"),
    (("epochs = 2", "epochs = 0"), "model.epochs: Input should be greater than or equal to 1"),
    (("[faithfulness]", "[faithfullness]"), "faithfullness: unknown setting"),
    (("core_availability = 0.3", "core_availability = 2"), "model.data.core_availability"),
])
def test_bad_decision_builds_name_the_problem(tmp_path, change, message):
    old, new = change
    assert old in SMALL
    with pytest.raises(BuildConfigError, match=re.escape(message)):
        build_stimuli(write(tmp_path, SMALL.replace(old, new)))
    assert not (tmp_path / "out").exists()


def test_unit_builds_refuse_decision_methods(tmp_path):
    text = """
name = "units"
output = "out"
images = "images"
methods = ["exemplars", "gradcam"]
[model]
source = "demo"
"""
    with pytest.raises(BuildConfigError, match=re.escape(
            "methods: 'gradcam' cannot explain 'neuron' units: it explains a model's "
            "decisions on images")):
        load_build_config(write(tmp_path, text))
