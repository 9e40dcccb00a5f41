"""The contracts of the stimulus registries, checked for every entry (in the spirit of
scikit-learn's ``parametrize_with_checks``): a unit source fits deterministically for a
seed, restores from its state and encodes positions to its units; an explanation method is
deterministic for a seed and writes valid images for the roles it declares; other packages
add entries through entry points."""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from stimuli.exemplars import ExemplarSearch
from stimuli.explain_context import ExplainContext, UnitStatistics
from stimuli.images import ArrayImages, ImageTransform, iter_batches
from stimuli.methods.base import Method, UnitRef
from stimuli.registry import METHODS, MODELS, SOURCES, load_plugins
from stimuli.sources.base import UnitSource
from stimuli.stimulus_set import ImageRef, Pair, encode_png
from tests.stimuli.conftest import make_tiny_cnn, planted_dictionary

CPU = torch.device("cpu")


def fitted(cls: type[UnitSource], X: torch.Tensor, seed: int = 0) -> UnitSource:
    source = cls(cls.Config(), seed=seed, device=CPU)
    if source.needs_fit:
        source.fit(X)
    return source


@pytest.mark.parametrize("source_id", list(SOURCES))
def test_unit_sources(source_id):
    cls = SOURCES[source_id]
    assert cls.id == source_id and cls.revision >= 1 and cls.description
    X, _ = planted_dictionary(2000, 24, 6, seed=3)  # M, C >= 0
    a, b = fitted(cls, X), fitted(cls, X)
    assert a.checksum() == b.checksum()  # deterministic for a seed
    encoder, atoms = a.encoder(), a.dictionary()
    if encoder is None:  # the channels themselves
        assert atoms is None and not a.needs_fit
        return
    codes = encoder(X[:100])
    assert codes.shape == (100, atoms.shape[0]) and atoms.shape[1] == 24
    assert torch.equal(codes, b.encoder()(X[:100]))
    restored = cls(cls.Config(), seed=0, device=CPU)
    restored.load_state(a.state())
    assert torch.equal(restored.encoder()(X[:100]), codes)
    assert restored.checksum() == a.checksum()
    assert fitted(cls, X, seed=1).checksum() != a.checksum()
    assert a.quality()["n_components"] == atoms.shape[0]


@pytest.fixture(scope="module")
def context():
    """A tiny CNN's channels ("0": 8 of them) over 240 random images, with their extremes."""
    model = make_tiny_cnn()
    rng = np.random.default_rng(0)
    images = ArrayImages(rng.integers(0, 256, (240, 12, 12, 3), dtype=np.uint8), name="rand")
    transform = ImageTransform(12, "RGB", (0.5,) * 3, (0.5,) * 3)
    search = ExemplarSearch(110, subset=torch.arange(0, 240, 3)).fit(
        model, {("0", "neuron"): None}, iter_batches(images, transform, batch_size=64))
    ext = search.extremes_[("0", "neuron")]
    stats = UnitStatistics(ext.top_values_, ext.top_indices_, ext.bottom_values_,
                           ext.bottom_indices_, ext.subset_index_, ext.subset_scores_)

    def context(cache_dir) -> ExplainContext:
        return ExplainContext(
            model=model, device=CPU, sources={("0", "neuron"): fitted(SOURCES["neuron"], None)},
            statistics={("0", "neuron"): stats},
            render=lambda i: encode_png(images.load(i).resize((24, 24))),
            image_name=images.name,
            display=lambda image: encode_png(image.resize((24, 24))),
            pool=images, transform=transform,
            inputs=lambda indices: torch.stack([transform(images.load(i)) for i in indices]),
            cache_dir=cache_dir,
        )

    return context


def quick(cls: type[Method]) -> Method:
    """The method with default options, but few optimization steps where it has them."""
    fast = {"steps": 10} if "steps" in cls.Config.model_fields else {}
    return cls(cls.Config(**fast))


def explain(method: Method, ctx: ExplainContext, units: list[UnitRef], seed: int) -> dict:
    """The method's roles per unit, after the methods it builds on (in ctx.explained)."""
    for needed in method.required():
        ctx.explained[needed] = explain(quick(METHODS[needed]), ctx, units, seed)
    rngs = [np.random.default_rng([seed, u.index]) for u in units]
    out = method.explain_batch(ctx, units, rngs)
    return {u.id: {r: [i.model_dump(mode="json") for i in items] for r, items in roles.items()}
            for u, roles in zip(units, out, strict=True)}


@pytest.mark.parametrize("method_id", list(METHODS))
def test_explanation_methods(method_id, context, tmp_path):
    cls = METHODS[method_id]
    assert cls.id == method_id and cls.revision >= 1 and cls.description and cls.roles
    if not cls.explains_units:  # its own builder and tests (tests/drawings)
        assert cls(cls.Config()).unsupported(SOURCES["neuron"])
        return
    method = quick(cls)
    units = [UnitRef(source="neuron", layer="0", index=i, id=f"0/neuron/{i}") for i in (1, 5)]
    runs = []
    for seed in (7, 7, 8):
        ctx = context(tmp_path)
        runs.append((explain(method, ctx, units, seed), ctx))
    (first, ctx), (again, _), (other, _) = runs
    assert first == again  # deterministic for a seed
    assert first != other  # and the seed matters
    for roles in first.values():
        assert roles and set(roles) <= set(cls.roles)
    for roles in runs[0][0].values():
        for role, items in roles.items():
            kind = cls.roles[role]
            model = Pair if kind == "pairs" else ImageRef
            refs = [model.model_validate(i) for i in items]
            assert refs, f"{method_id} wrote an empty {role}"
            for ref in refs:
                for image in (ref.max, ref.min) if isinstance(ref, Pair) else (ref,):
                    for digest in filter(None, (image.image, image.map)):
                        with Image.open(io.BytesIO(ctx.images[digest])) as img:
                            img.verify()


PLUGIN = '''
from stimuli.methods.exemplars import Exemplars


class Copy(Exemplars):
    id = "copy"
    revision = 3
    description = "a third-party method (a copy of exemplars)"
'''


def test_other_packages_register_methods_through_entry_points(tmp_path, monkeypatch):
    (tmp_path / "assay_plugin_demo.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "assay_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: assay-plugin-demo\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[assay.methods]\ncopy = assay_plugin_demo:Copy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = dict(METHODS)
    try:
        assert load_plugins() == ["assay.methods:copy"]
        assert METHODS["copy"].revision == 3
        (info / "entry_points.txt").write_text("[assay.methods]\nexemplars = "
                                               "assay_plugin_demo:Copy\n")
        with pytest.raises(ValueError, match="assay.methods:exemplars names a class whose id "
                                             "is 'copy'"):
            load_plugins()
    finally:
        METHODS.clear()
        METHODS.update(registry)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_model_loaders(model_id):
    """Each loader's options are told apart by `source`, which is its id, and every loader
    takes the layers to explain and how token layers are read."""
    cls = MODELS[model_id]
    assert cls.id == model_id and cls.description
    fields = cls.Config.model_fields
    assert fields["source"].default == model_id
    assert {"layers", "cls_token"} <= set(fields)
    with pytest.raises(ValidationError, match="layers"):
        cls.Config.model_validate({"source": model_id, "layers": []})


def test_the_demo_and_factory_loaders_load(tmp_path):
    """(torchvision and timm: tests/stimuli/test_vision_models.py, in their own venv)."""
    factory = MODELS["factory"]().load(
        MODELS["factory"].Config(factory="tests.stimuli.conftest:make_tiny_cnn", layers=["0"],
                                 classes=list("abcd")),
        seed=0, cache_dir=tmp_path, device=CPU)
    assert not factory.model.training and factory.classes == list("abcd")
    assert factory.images is None and factory.info["source"] == "factory"
