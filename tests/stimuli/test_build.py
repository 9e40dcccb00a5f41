import re

import numpy as np
import pytest
from PIL import Image

from server.catalog import launch_study
from server.devserver import serving
from server.export import trial_rows
from server.extensions import get_db
from server.simulate import run_participant
from stimuli.build import build_stimuli
from stimuli.build_config import load_build_config
from stimuli.images import UnreadableImageWarning
from stimuli.nmf import NMF
from stimuli.stimulus_set import load_stimulus_set
from tests.conftest import demo_spec

SMALL = """
name = "small"
output = "out"
cache_dir = "cache"
seed = {seed}

[model]
layers = ["block2", "block3"]
data = "procedural"
train_samples = 2000

[images]
limit = 500
display_size = 56

[units]
per_layer = 3

[dictionary]
n_components = 8
sae_epochs = 3
fit_samples = 3000

[exemplars]
n_buckets = 3
n_query_batches = 3
subset_size = 300
hard_percentiles = [0.8, 0.95]

[importance]
n_images = 32
"""


def write_config(folder, seed=0, text=SMALL):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "build.toml"
    path.write_text(text.format(seed=seed))
    return path


def tree_bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("first"))
    return config, build_stimuli(config)


def test_built_set_loads_with_matched_units_and_importance(built):
    config, digest = built
    stimulus_set = load_stimulus_set(config.parent / "out")
    assert stimulus_set.digest == digest
    units = stimulus_set.manifest.units
    for layer in ("block2", "block3"):
        counts = {
            k: sum(u.layer == layer and u.kind == k for u in units)
            for k in ("neuron", "nmf", "sae")
        }
        assert counts == {"neuron": 3, "nmf": 3, "sae": 3}
    for unit in units:
        assert isinstance(unit.covariates["importance"], float)
        assert len(unit.references.max) == 3 + 1 and len(unit.queries) == 3 and len(unit.catch) == 1
        assert not set(unit.references.max) & set(unit.references.min)
        # hard queries (inner percentiles) are held out from the references
        assert not {q.max for q in unit.queries} & set(unit.references.max)
        assert not {q.min for q in unit.queries} & set(unit.references.min)
    prov = stimulus_set.manifest.provenance
    assert len(prov["model"]["checksum"]) == 64 and prov["seed"] == 0
    assert prov["dictionaries"]["block3/nmf"]["dead"] == 0
    assert {"package_version", "layers", "params", "images"} <= prov.keys()


def test_same_seed_gives_a_byte_identical_set_and_a_rerun_reuses_work(built, tmp_path, monkeypatch):
    config, digest = built
    fresh = write_config(tmp_path / "second")  # its own cache: all but the model is recomputed
    (fresh.parent / "cache").mkdir()
    for trained in (config.parent / "cache").glob("demo-cnn-*.pt"):
        (fresh.parent / "cache" / trained.name).write_bytes(trained.read_bytes())
    assert build_stimuli(fresh) == digest
    assert tree_bytes(fresh.parent / "out") == tree_bytes(config.parent / "out")

    def refuse(*_a, **_k):
        raise AssertionError("a resumed build must not refit")

    monkeypatch.setattr(NMF, "fit", refuse)
    assert build_stimuli(fresh) == digest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('layers = ["block2", "block3"]', 'layers = ["block9"]'),
            "unknown layer 'block9'; available layers: block1, block1.0",
        ),
        (
            ("per_layer = 3", "per_layer = 0"),
            "units.per_layer: Input should be greater than or equal to 1",
        ),
        (
            ("source" if False else "seed = {seed}", "seed = {seed}\nextra = 1"),
            "extra: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_configs(tmp_path, change, message):
    config = write_config(tmp_path, text=SMALL.replace(*change))
    with pytest.raises(ValueError, match=re.escape(message)):
        build_stimuli(config)


def test_config_paths_are_relative_to_the_file(tmp_path):
    config = load_build_config(write_config(tmp_path))
    assert config.output == tmp_path / "out" and config.cache_dir == tmp_path / "cache"


FOLDER = """
name = "folder"
output = "out"
cache_dir = "cache"

[model]
source = "factory"
factory = "tests.stimuli.conftest:make_tiny_cnn"
layers = ["0"]

[images]
source = "images"
size = 16
mode = "RGB"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
display_size = 32

[units]
per_layer = 2

[dictionary]
n_components = 4
sae_k = 2
sae_epochs = 2
fit_samples = 2000

[exemplars]
n_buckets = 2
n_query_batches = 2
subset_size = 0

[importance]
n_images = 16
"""


def test_build_from_a_folder_with_a_corrupt_image(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(40):  # colour blobs of varying brightness, in nested folders
        folder = tmp_path / "images" / f"set{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        level = rng.uniform(0, 255, size=3)
        pixels = np.clip(level + rng.normal(0, 30, size=(16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="RGB").save(folder / f"{i:02d}.png")
    (tmp_path / "images" / "set1" / "zz-broken.jpg").write_bytes(b"\xff\xd8 truncated")
    config = write_config(tmp_path, text=FOLDER)
    with pytest.warns(UnreadableImageWarning, match="zz-broken.jpg"):
        digest = build_stimuli(config)
    stimulus_set = load_stimulus_set(tmp_path / "out")
    assert stimulus_set.digest == digest
    assert {u.kind for u in stimulus_set.manifest.units} == {"neuron", "nmf", "sae"}
    names = stimulus_set.manifest.provenance["image_names"].values()
    assert "set1/zz-broken.jpg" not in names and all(n.startswith("set") for n in names)


def test_a_participant_completes_a_study_on_a_built_set(built, app):
    config, digest = built
    slug = "built-" + digest[:8]
    spec = demo_spec(slug, stimulus_set="out", two_afc={"n_references": 3})
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, spec, config.parent / "study.toml")
    with serving(app) as base:
        result = run_participant(base, slug, "PID-built-1", seed=1)
    assert result.status in ("completed", "screened_out")
    with app.app_context():
        frame = trial_rows(get_db(), slug)
    main = frame[frame.trial_kind != "practice"]
    assert len(main) == 12 + 2 and not main.duplicated("trial_index").any()
    units = {u.id: u for u in load_stimulus_set(config.parent / "out").manifest.units}
    kinds = {units[u].kind for u in main.unit_id}
    assert kinds in ({"neuron"}, {"nmf"})  # one between-subject condition
    assert set(main.layer) == {"block2", "block3"}
