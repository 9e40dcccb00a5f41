"""The stimulus-set format: verified on load, corrupt or inconsistent sets refused."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from stimuli.procedural import build_procedural_set
from stimuli.stimulus_set import StimulusSetError, load_stimulus_set


@pytest.fixture
def copy(stimulus_dir, tmp_path):
    target = tmp_path / "set"
    shutil.copytree(stimulus_dir, target)
    return target


def test_same_seed_same_bytes(tmp_path, stimulus_dir):
    assert build_procedural_set(tmp_path / "a", seed=0) == load_stimulus_set(stimulus_dir).digest
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (
        stimulus_dir / "manifest.json"
    ).read_bytes()
    assert build_procedural_set(tmp_path / "b", seed=1) != load_stimulus_set(stimulus_dir).digest


def _first_image(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory / "images" / (manifest["units"][0]["references"]["max"][0] + ".png")


def test_corrupt_image_is_refused(copy):
    path = _first_image(copy)
    path.write_bytes(path.read_bytes()[:-20] + b"\0" * 20)
    with pytest.raises(
        StimulusSetError, match=re.escape(f"{path}: content does not match its name")
    ):
        load_stimulus_set(copy)


def test_missing_image_is_refused(copy):
    path = _first_image(copy)
    path.unlink()
    with pytest.raises(StimulusSetError, match=f"image {path.stem}.png is missing"):
        load_stimulus_set(copy)


def edit_manifest(directory, change):
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


BAD_MANIFESTS = [
    (lambda m: m.update(schema_version=7), "schema_version 7 is not supported"),
    (lambda m: m["units"][1].update(id=m["units"][0]["id"]), "appears twice"),
    (
        lambda m: m["units"][0]["catch"][0].update(max=m["units"][0]["queries"][0]["max"]),
        "catch images must be among the unit's references",
    ),
    (
        lambda m: m["units"][0]["references"]["max"].append("../../etc/passwd"),
        "'../../etc/passwd' is not a SHA-256 hex digest",
    ),
    (lambda m: m["units"][0].pop("layer"), "units.0.layer: Field required"),
]


@pytest.mark.parametrize("change,message", BAD_MANIFESTS)
def test_inconsistent_manifest_is_refused(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(StimulusSetError, match=re.escape(message)):
        load_stimulus_set(copy)


def test_not_a_set(tmp_path):
    with pytest.raises(StimulusSetError, match="no manifest.json"):
        load_stimulus_set(tmp_path)
