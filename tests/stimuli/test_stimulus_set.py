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
    first = manifest["entries"][0]["explanations"]["exemplars"]["max_refs"][0]["image"]
    return directory / "images" / (first + ".png")


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


def _exemplars(m, i=0):
    return m["entries"][i]["explanations"]["exemplars"]


BAD_MANIFESTS = [
    (lambda m: m.update(schema_version=7), "schema_version 7 is not supported (expected 1 or 2)"),
    (lambda m: m["entries"][1].update(id=m["entries"][0]["id"]), "appears twice"),
    (
        lambda m: _exemplars(m)["catch"][0].update(max=_exemplars(m)["queries"][0]["max"]),
        "exemplars catch images must be among its references",
    ),
    (
        lambda m: _exemplars(m)["max_refs"].append({"image": "../../etc/passwd"}),
        "exemplars.max_refs.images.9.image: '../../etc/passwd' is not a SHA-256 hex digest",
    ),
    (lambda m: m["entries"][0].pop("source"), "entries.0.source: Field required"),
    (lambda m: m["entries"][0].update(type="sound"), "entries.0.type: Input should be 'unit', "
     "'category' or 'decision'"),
]


@pytest.mark.parametrize("change,message", BAD_MANIFESTS)
def test_inconsistent_manifest_is_refused(copy, change, message):
    edit_manifest(copy, change)
    with pytest.raises(StimulusSetError, match=re.escape(message)):
        load_stimulus_set(copy)


def test_not_a_set(tmp_path):
    with pytest.raises(StimulusSetError, match="no manifest.json"):
        load_stimulus_set(tmp_path)


def v1_manifest(v2: dict) -> dict:
    """The same units written as schema version 1 (units with references/queries/catch)."""
    units = []
    for e in v2["entries"]:
        ex = e["explanations"]["exemplars"]
        units.append({
            "id": e["id"], "kind": e["source"], "layer": e["layer"],
            "covariates": e["covariates"],
            "references": {"max": [r["image"] for r in ex["max_refs"]],
                           "min": [r["image"] for r in ex["min_refs"]]},
            "queries": [{"max": q["max"]["image"], "min": q["min"]["image"]}
                        for q in ex["queries"]],
            "catch": [{"max": q["max"]["image"], "min": q["min"]["image"]}
                      for q in ex.get("catch", [])],
        })
    return {"schema_version": 1, "name": v2["name"], "provenance": v2["provenance"],
            "units": units}


def test_version_1_sets_still_load_as_exemplars(copy, stimulus_dir):
    v2 = json.loads((stimulus_dir / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(v1_manifest(v2)))
    old = load_stimulus_set(copy)
    assert old.manifest.schema_version == 2 and old.images.keys() == load_stimulus_set(
        stimulus_dir).images.keys()
    assert old.manifest.model_dump(mode="json")["entries"] == v2["entries"]
    bad = v1_manifest(v2)
    bad["units"][0]["catch"][0]["max"] = bad["units"][0]["queries"][0]["max"]
    (copy / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(StimulusSetError, match="catch images must be among its references"):
        load_stimulus_set(copy)


def test_a_role_may_be_pairs_or_images_with_maps_and_activations(copy):
    def add_maps(m):
        ex = _exemplars(m)
        first = ex["max_refs"][0]["image"]
        m["entries"][0]["explanations"]["maco"] = {
            "max_refs": [{"image": first, "map": ex["min_refs"][0]["image"],
                          "activation": 3.5, "meta": {"steps": 256}}],
        }
        m["entries"][0]["stimulus"] = {"image": first}
    edit_manifest(copy, add_maps)
    entry = load_stimulus_set(copy).manifest.entries[0]
    (ref,) = entry.role("maco", "max_refs")
    assert ref.activation == 3.5 and ref.meta == {"steps": 256} and ref.map in entry.image_digests()
    assert entry.role("maco", "queries") == [] and entry.role("gradcam", "max_refs") == []
