"""Building stimulus sets: matched units per source, explanations per method, name-based
seeds, per-method caches, every config problem at once, and a built set in a study."""

import io
import json
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
from stimuli.build_config import BuildConfigError, load_build_config
from stimuli.images import UnreadableImageWarning
from stimuli.methods.base import Method, RoleKind
from stimuli.nmf import NMF
from stimuli.registry import METHODS
from stimuli.stimulus_set import load_stimulus_set
from tests.conftest import demo_spec

SMALL = """
name = "small"
output = "out"
cache_dir = "cache"
seed = {seed}
sources = ["neuron", "nmf", "sae"]
methods = ["exemplars"]

[model]
source = "demo"
layers = ["block2", "block3"]
data = "procedural"
train_samples = 2000

[images]
limit = 500
display_size = 56

[units]
per_layer = 3

[positions]
fit_samples = 3000

[nmf]
n_components = 8

[sae]
n_components = 8
epochs = 3

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
    entries = stimulus_set.manifest.entries
    for layer in ("block2", "block3"):
        counts = {
            k: sum(e.layer == layer and e.source == k for e in entries)
            for k in ("neuron", "nmf", "sae")
        }
        assert counts == {"neuron": 3, "nmf": 3, "sae": 3}
    for entry in entries:
        assert entry.type == "unit" and isinstance(entry.covariates["importance"], float)
        ex = entry.explanations["exemplars"]
        assert len(ex["max_refs"]) == 3 + 1 and len(ex["queries"]) == 3 and len(ex["catch"]) == 1
        refs_max = {r.image for r in ex["max_refs"]}
        refs_min = {r.image for r in ex["min_refs"]}
        assert not refs_max & refs_min
        # hard queries (inner percentiles) are held out from the references
        assert not {q.max.image for q in ex["queries"]} & refs_max
        assert not {q.min.image for q in ex["queries"]} & refs_min
        # each image carries the activation it reached: references ranked, queries inner
        acts = [r.activation for r in ex["max_refs"]]
        assert acts == sorted(acts, reverse=True)
        assert all(q.max.activation <= acts[-1] for q in ex["queries"])
        assert max(r.activation for r in ex["min_refs"]) < min(acts)
    prov = stimulus_set.manifest.provenance
    assert len(prov["model"]["checksum"]) == 64 and prov["seed"] == 0
    assert prov["dictionaries"]["block3/nmf"]["dead"] == 0
    assert prov["methods"] == {"exemplars": 1} and set(prov["sources"]) == {"neuron", "nmf", "sae"}
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
        (("seed = {seed}", "seed = {seed}\nextra = 1"), "extra: unknown setting"),
    ],
)
def test_bad_configs(tmp_path, change, message):
    config = write_config(tmp_path, text=SMALL.replace(*change))
    with pytest.raises(ValueError, match=re.escape(message)):
        build_stimuli(config)


def test_every_config_problem_is_reported_at_once(tmp_path):
    text = (SMALL.replace('sources = ["neuron", "nmf", "sae"]', 'sources = ["neuron", "pca"]')
            .replace('methods = ["exemplars"]', 'methods = ["exemplars", "lime"]')
            .replace("n_buckets = 3", "n_buckets = 0")
            .replace("[nmf]", "[nfm]")
            .replace('source = "demo"', 'source = "demo"\narch = "resnet18"'))
    with pytest.raises(BuildConfigError) as info:
        load_build_config(write_config(tmp_path, text=text))
    lines = str(info.value).splitlines()
    assert lines[0].endswith("build.toml: invalid build config")
    assert lines[1:] == [
        "  sources.1: 'pca' is not a unit source (known: logit, neuron, nmf, sae)",
        "  methods.1: 'lime' is not an explanation method (known: accentuation, craft, "
        "drawings, exemplars, fourier, gradcam, integrated_gradients, lowpass, maco, "
        "occlusion, rise, saliency, smoothgrad, wam)",
        "  exemplars.n_buckets: Input should be greater than or equal to 1",
        "  nfm: unknown setting (a table must be named after a listed source or method)",
        "  model.arch: Extra inputs are not permitted",
    ]


def test_config_paths_are_relative_to_the_file(tmp_path):
    config = load_build_config(write_config(tmp_path))
    assert config.output == tmp_path / "out" and config.cache_dir == tmp_path / "cache"


FOLDER = """
name = "folder"
output = "out"
cache_dir = "cache"
sources = ["neuron", "nmf", "sae", "logit"]

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

[positions]
fit_samples = 2000

[nmf]
n_components = 4

[sae]
n_components = 4
k = 2
epochs = 2

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
    entries = stimulus_set.manifest.entries
    assert {e.source for e in entries} == {"neuron", "nmf", "sae", "logit"}
    logits = [e for e in entries if e.source == "logit"]
    assert {e.layer for e in logits} == {"logits"} and len(logits) == 2
    assert all("importance" not in e.covariates for e in logits)
    assert all(e.id == f"logits/logit/{e.covariates['unit_index']}" for e in logits)
    names = stimulus_set.manifest.provenance["image_names"].values()
    assert "set1/zz-broken.jpg" not in names and all(n.startswith("set") for n in names)


def test_a_participant_completes_a_study_on_a_built_set(built, app):
    config, digest = built
    slug = "built-" + digest[:8]
    spec = demo_spec(slug, stimulus_set="out", paradigm={"n_references": 3})
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
    entries = {e.id: e for e in load_stimulus_set(config.parent / "out").manifest.entries}
    sources = {entries[u].source for u in main.unit_id}
    assert sources in ({"neuron"}, {"nmf"})  # one between-subject condition
    assert set(main.source) == sources
    assert main["cov_importance"].tolist() == [
        entries[u].covariates["importance"] for u in main.unit_id]
    assert set(main.layer) == {"block2", "block3"}


class Shuffled(Method):
    """A test method: the unit's most activating images in a seeded random order."""

    id = "shuffled"
    revision = 1
    roles: dict[str, RoleKind] = {"max_refs": "images"}  # noqa: RUF012

    def n_extremes(self) -> int:
        return 6

    def explain(self, ctx, unit, rng):
        top = ctx.statistics[(unit.layer, unit.source)].top_indices[unit.index, :6].tolist()
        return {"max_refs": [ctx.natural(i) for i in rng.permutation(top).tolist()]}


def entries_by_id(folder):
    return {e["id"]: e for e in json.loads((folder / "manifest.json").read_text())["entries"]}


def test_seeds_come_from_names_and_each_method_keeps_its_own_cache(built, tmp_path, monkeypatch):
    """Adding a source and a method changes no other entry; a method's new revision
    recomputes its explanations only."""
    config, _ = built
    monkeypatch.setitem(METHODS, "shuffled", Shuffled)
    text = (SMALL.replace('sources = ["neuron", "nmf", "sae"]', 'sources = ["neuron", "nmf"]'))
    fewer = write_config(tmp_path / "fewer", text=text)
    (fewer.parent / "cache").mkdir()
    for trained in (config.parent / "cache").glob("demo-cnn-*.pt"):
        (fewer.parent / "cache" / trained.name).write_bytes(trained.read_bytes())
    build_stimuli(fewer)
    small, big = entries_by_id(fewer.parent / "out"), entries_by_id(config.parent / "out")
    assert set(small) < set(big) and any(k.split("/")[1] == "sae" for k in set(big) - set(small))
    for entry_id, entry in small.items():
        assert entry == big[entry_id]  # same units, same images, same order
    more = text.replace('methods = ["exemplars"]', 'methods = ["exemplars", "shuffled"]')
    fewer.write_text(more.format(seed=0))
    build_stimuli(fewer)
    both = entries_by_id(fewer.parent / "out")
    for entry_id, entry in both.items():
        assert entry["explanations"]["exemplars"] == small[entry_id]["explanations"]["exemplars"]
        assert [r["image"] for r in entry["explanations"]["shuffled"]["max_refs"]] != [
            r["image"] for r in entry["explanations"]["exemplars"]["max_refs"][:6]]
    cache = fewer.parent / "cache"
    before = {p.name for p in cache.glob("explain-*.pt")}
    monkeypatch.setattr(Shuffled, "revision", 2)
    build_stimuli(fewer)
    new = {p.name for p in cache.glob("explain-*.pt")} - before
    assert new and all(name.startswith("explain-shuffled-") for name in new)


VIT = """
name = "vit"
output = "out"
cache_dir = "cache"
sources = ["neuron", "nmf", "sae"]

[model]
source = "factory"
factory = "tests.stimuli.test_tokens:make_tiny_vit"
layers = ["blocks.0.mlp.1", "blocks.1"]
cls_token = {cls}

[images]
source = "images"
size = 16
mode = "RGB"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
display_size = 32

[units]
per_layer = 2

[positions]
fit_samples = 1500

[nmf]
n_components = 4

[sae]
n_components = 8
k = 2
epochs = 2

[exemplars]
n_buckets = 2
n_query_batches = 2
subset_size = 0

[importance]
n_images = 8
"""


@pytest.mark.parametrize("cls", ["true", "false"])
def test_a_vision_transformer_s_token_layers_build(tmp_path, image_folder, cls):
    (tmp_path / "build.toml").write_text(VIT.replace("{cls}", cls))
    build_stimuli(tmp_path / "build.toml")
    entries = load_stimulus_set(tmp_path / "out").manifest.entries
    counts = {(e.layer, e.source) for e in entries}
    assert counts == {(layer, s) for layer in ("blocks.0.mlp.1", "blocks.1")
                      for s in ("neuron", "nmf", "sae")}
    assert all(len(e.role("exemplars", "max_refs")) == 2 + 1 for e in entries)
    # the residual stream is signed: NMF was fitted, and encodes, its non-negative part
    prov = load_stimulus_set(tmp_path / "out").manifest.provenance
    assert prov["dictionaries"]["blocks.1/nmf"]["n_components"] == 4
    assert prov["params"]["model"]["cls_token"] is (cls == "true")


SYNTHETIC = SMALL.replace('sources = ["neuron", "nmf", "sae"]',
                          'sources = ["neuron", "nmf", "sae", "logit"]') \
    .replace('methods = ["exemplars"]',
             'methods = ["accentuation", "maco", "fourier", "exemplars"]') \
    .replace('layers = ["block2", "block3"]', 'layers = ["block3"]') + """
[maco]
n_images = 2
steps = 15
units_per_batch = 2

[fourier]
n_images = 2
steps = 15
units_per_batch = 2

[accentuation]
n_images = 2
steps = 15
units_per_batch = 2
"""


class Interrupted(Exception):
    """A build stopped from outside (Ctrl-C, a killed job)."""


def test_optimized_images_are_built_in_cached_batches(built, tmp_path, monkeypatch):
    """maco, fourier and accentuation in a build, for every source: their roles and
    per-image records, accentuations seeded by the exemplars' references (listed last,
    explained first), and a build interrupted in a batch resumes there."""
    from stimuli.methods.synthetic import Synthetic

    config, _ = built
    path = write_config(tmp_path / "fv", text=SYNTHETIC)
    (path.parent / "cache").mkdir()
    for trained in (config.parent / "cache").glob("demo-cnn-*.pt"):
        (path.parent / "cache" / trained.name).write_bytes(trained.read_bytes())
    runs: list = []
    first: list = []
    real = Synthetic.optimize

    def optimize(self, ctx, units, *args, **kwargs):
        runs.append((self.id, tuple(u.id for u in units)))
        if len(runs) == 4 and not first:
            raise Interrupted  # the build stops in its fourth batch
        return real(self, ctx, units, *args, **kwargs)

    monkeypatch.setattr(Synthetic, "optimize", optimize)
    with pytest.raises(Interrupted):
        build_stimuli(path)
    first.extend(runs)
    runs.clear()
    digest = build_stimuli(path)
    # 4 families (neurons, NMF and SAE features of block3, logits) x 3 units in batches of
    # 2: 8 batches per method; three were cached
    assert len(first) == 4 and len(runs) == 3 * 8 - 3 and runs[0] == first[-1]
    assert not set(first[:3]) & set(runs)

    stimulus_set = load_stimulus_set(path.parent / "out")
    assert stimulus_set.digest == digest
    for entry in stimulus_set.manifest.entries:
        natural = entry.explanations["exemplars"]
        top = entry.covariates["top_score"]  # the unit's top natural activation
        for method in ("maco", "fourier", "accentuation"):
            roles = entry.explanations[method]
            assert [len(roles[r]) for r in ("max_refs", "min_refs", "catch")] == [2, 2, 1]
            for side in ("max_refs", "min_refs"):
                for ref in roles[side]:
                    assert ref.meta["relative_activation"] == pytest.approx(
                        ref.activation / top, rel=1e-3, abs=1e-6)
                    assert -1 <= ref.meta["plausibility"] <= 1
                    with Image.open(io.BytesIO(stimulus_set.images[ref.image])) as img:
                        assert img.size == (56, 56)  # shown at display_size, as naturals
            # maximizing beats minimizing for every unit
            assert min(r.activation for r in roles["max_refs"]) > \
                max(r.activation for r in roles["min_refs"])
        assert all(r.map for r in entry.explanations["maco"]["max_refs"])
        accent = entry.explanations["accentuation"]
        for side in ("max_refs", "min_refs"):
            seeds = [r.meta["seed"] for r in accent[side]]
            assert seeds == [r.image for r in natural[side][:2]]
            assert all(0 < r.meta["seed_distance"] < 0.5 for r in accent[side])
        assert all(r.activation > r.meta["seed_activation"] for r in accent["max_refs"])
    details = stimulus_set.manifest.provenance["method_details"]
    assert details["maco"]["spectrum"]["source"] == "images"
    assert len(details["maco"]["spectrum"]["sha256"]) == 64

    # a changed maco option recomputes maco's batches only
    runs.clear()
    path.write_text(SYNTHETIC.replace("steps = 15\nunits_per_batch = 2\n\n[fourier]",
                                      "steps = 16\nunits_per_batch = 2\n\n[fourier]")
                    .format(seed=0))
    build_stimuli(path)
    assert {method for method, _ in runs} == {"maco"} and len(runs) == 8


@pytest.mark.parametrize(("change", "message"), [
    (('methods = ["accentuation", "maco", "fourier", "exemplars"]', 'methods = ["accentuation"]'),
     "methods: 'accentuation' builds on 'exemplars', which must be listed too"),
    (("[fourier]\n", '[maco.spectrum]\nsource = "imagenet"\n\n[fourier]\n'),
     "maco: spectrum.source = \"imagenet\" is an RGB spectrum but images.mode is 'L'"),
    (("[maco]\n", "[maco]\nshow = \"both\"\n"), "maco.show: Input should be 'image' or 'masked'"),
])
def test_optimized_image_configs_are_checked_when_they_load(tmp_path, change, message):
    with pytest.raises(BuildConfigError, match=re.escape(message)):
        load_build_config(write_config(tmp_path, text=SYNTHETIC.replace(*change)))
