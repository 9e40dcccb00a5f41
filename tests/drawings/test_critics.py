"""The originality and recognizability critics on a tiny synthetic corpus (categories of
random strokes, each drawn with jittered variants), and the plane they place drawers on.
Thresholds were set over five corpus seeds: the trained recognizability critic scores
0.86-0.96 in the 5-way test, an untrained one (one step) 0.55-0.76."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stimuli.drawings import critics
from stimuli.drawings.corpus import DrawingCorpus
from stimuli.drawings.critics import (
    OriginalityConfig,
    RecognizabilityConfig,
    train_originality_critic,
    train_recognizability_critic,
)
from stimuli.drawings.plane import mean_by_category, plane, plane_point
from tests.drawings.synthetic import synthetic_corpus

SIZE, JITTER = 20, 0.03
SMALL = {"width": 16, "blocks": 3, "features": 32}
ORIGINALITY = OriginalityConfig(steps=60, batch=32, projection=32, **SMALL)
RECOGNIZABILITY = RecognizabilityConfig(steps=500, ways=5, queries=3, **SMALL)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Runs this small gain nothing from a second thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus() -> DrawingCorpus:
    """20 background and 10 held-out categories of random strokes, 16 drawings each."""
    return synthetic_corpus(30, 16, SIZE, evaluation=10, jitter=JITTER, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("critics")


@pytest.fixture(scope="module")
def originality(corpus, cache_dir) -> critics.OriginalityCritic:
    return train_originality_critic(corpus.split("background"), ORIGINALITY, seed=0,
                                    cache_dir=cache_dir)


@pytest.fixture(scope="module")
def recognizability(corpus, cache_dir) -> critics.RecognizabilityCritic:
    return train_recognizability_critic(corpus.split("background"), RECOGNIZABILITY, seed=0,
                                        cache_dir=cache_dir)


@pytest.fixture(scope="module")
def held_out(corpus) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluation split: its drawings (N, S, S) but the exemplars, their labels (N,),
    and the first drawing of each category as its exemplar (C, S, S)."""
    evaluation = corpus.split("evaluation")
    first = np.array([np.flatnonzero(evaluation.labels == c)[0]
                      for c in range(len(evaluation.categories))])
    rest = np.setdiff1d(np.arange(len(evaluation.labels)), first)
    return evaluation.images[rest], evaluation.labels[rest], evaluation.images[first]


def test_recognizes_held_out_categories_well_above_chance(recognizability, held_out):
    drawings, labels, exemplars = held_out
    result = recognizability.recognizability(drawings, labels, exemplars, ways=5,
                                             episodes=5, seed=1)
    assert result.correct.shape == (len(drawings),)
    assert ((result.correct >= 0) & (result.correct <= 1)).all()
    assert result.accuracy == pytest.approx(result.correct.mean())
    assert result.accuracy >= 0.8  # chance: 0.2


def test_noise_is_recognized_near_chance(recognizability, held_out):
    _, _, exemplars = held_out
    rng = np.random.default_rng(2)
    noise = np.where(rng.random((300, SIZE, SIZE)) < 0.15, 255, 0).astype(np.uint8)
    labels = rng.integers(0, len(exemplars), 300)
    result = recognizability.recognizability(noise, labels, exemplars, ways=5, episodes=5,
                                             seed=1)
    assert 0.05 <= result.accuracy <= 0.4  # chance: 0.2


def test_recognizability_is_seeded(recognizability, held_out):
    drawings, labels, exemplars = held_out
    a, b, c = (recognizability.recognizability(drawings, labels, exemplars, ways=3,
                                               episodes=1, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.correct, b.correct)
    assert not np.array_equal(a.correct, c.correct)


def test_originality_orders_copy_variant_other_category(originality, held_out):
    drawings, labels, exemplars = held_out
    copy = originality.originality(exemplars, exemplars)
    variant = originality.originality(drawings, exemplars[labels])
    other = originality.originality(drawings, exemplars[(labels + 1) % len(exemplars)])
    assert copy.shape == (len(exemplars),) and variant.shape == (len(drawings),)
    assert np.abs(copy).max() < 1e-6
    assert variant.mean() > 0.05
    assert other.mean() > 1.3 * variant.mean()
    assert (other > variant).mean() > 0.75  # drawing by drawing, mostly


def test_originality_ignores_grey_level(originality, held_out):
    """Both critics binarize drawings first (the papers' equalized statistics)."""
    _, _, exemplars = held_out
    ink = exemplars > 127
    dark, faint = (np.where(ink, v, 0).astype(np.uint8) for v in (255, 90))
    assert np.abs(originality.originality(faint, dark)).max() < 1e-6
    assert originality.originality(exemplars, dark).max() > 0  # thresholds differ: 0.3, 0.5


def test_originality_is_in_units_of_the_feature_spread(originality, held_out, corpus):
    """The critic's scale is the spread of its training drawings' features (all 320 of
    them here); ``normalize="drawings"`` uses the scored drawings' own, as the paper."""
    def spread(images: np.ndarray) -> float:
        return originality.embed(images).std(dim=1).mean().item()

    assert originality.scale_ == pytest.approx(spread(corpus.split("background").images),
                                               rel=1e-5)
    drawings, labels, exemplars = held_out
    by_critic = originality.originality(drawings, exemplars[labels])
    by_drawings = originality.originality(drawings, exemplars[labels], normalize="drawings")
    np.testing.assert_allclose(by_drawings,
                               by_critic * originality.scale_ / spread(drawings), rtol=1e-5)


def _weights(critic) -> list[torch.Tensor]:
    return [t.detach().clone() for t in critic.encoder.state_dict().values()]


@pytest.mark.parametrize("train, config", [
    (train_originality_critic, ORIGINALITY.model_copy(update={"steps": 8})),
    (train_recognizability_critic, RECOGNIZABILITY.model_copy(update={"steps": 20})),
])
def test_training_is_determined_by_the_seed(corpus, tmp_path, train, config):
    background = corpus.split("background")
    before = torch.random.get_rng_state()
    a, b, c = (_weights(train(background, config, seed=s, cache_dir=tmp_path / str(i)))
               for i, s in enumerate((3, 3, 4)))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, z) for x, z in zip(a, c, strict=True))
    assert torch.equal(torch.random.get_rng_state(), before)  # global generator untouched


def test_second_call_loads_without_training(corpus, cache_dir, originality, recognizability,
                                            held_out, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    monkeypatch.setattr(critics, "_fit_simclr", refuse)
    monkeypatch.setattr(critics, "_fit_protonet", refuse)
    background = corpus.split("background")
    ori = train_originality_critic(background, ORIGINALITY, seed=0, cache_dir=cache_dir)
    rec = train_recognizability_critic(background, RECOGNIZABILITY, seed=0,
                                       cache_dir=cache_dir)
    drawings, labels, exemplars = held_out
    assert ori.scale_ == originality.scale_
    np.testing.assert_array_equal(ori.originality(drawings, exemplars[labels]),
                                  originality.originality(drawings, exemplars[labels]))
    np.testing.assert_array_equal(rec.embed(drawings).numpy(),
                                  recognizability.embed(drawings).numpy())
    with pytest.raises(AssertionError, match="trained again"):  # another seed: a new key
        train_recognizability_critic(background, RECOGNIZABILITY, seed=1, cache_dir=cache_dir)


@pytest.mark.parametrize("kwargs, message", [
    ({"ways": 11}, r"ways must be in \[2, 10\]"),
    ({"ways": 1}, r"ways must be in \[2, 10\]"),
    ({"episodes": 0}, "episodes must be at least 1"),
    ({"labels": np.array([0, 10])}, "labels must index the 10 exemplars"),
    ({"labels": np.array([0])}, r"labels must be \(2,\)"),
    ({"drawings": np.zeros((2, 24, 24), np.uint8)}, r"judges \(20, 20\) drawings"),
])
def test_recognizability_refuses_bad_input(recognizability, held_out, kwargs, message):
    _, _, exemplars = held_out
    args = {"drawings": exemplars[:2], "labels": np.array([0, 1]), "ways": 5} | kwargs
    with pytest.raises(ValueError, match=message):
        recognizability.recognizability(args.pop("drawings"), args.pop("labels"),
                                        exemplars, **args)


def test_originality_refuses_unpaired_input(originality, held_out):
    _, _, exemplars = held_out
    with pytest.raises(ValueError, match="must pair up one to one"):
        originality.originality(exemplars, exemplars[:3])
    with pytest.raises(ValueError, match="normalize must be"):
        originality.originality(exemplars, exemplars, normalize="batch")


def test_protonet_needs_enough_categories(corpus, tmp_path):
    few = RECOGNIZABILITY.model_copy(update={"ways": 25})
    with pytest.raises(ValueError, match="25-way episodes need 25 categories"):
        train_recognizability_critic(corpus.split("background"), few, seed=0,
                                     cache_dir=tmp_path)


def test_mean_by_category_weighs_categories_equally():
    assert mean_by_category(np.array([1.0, 1.0, 1.0, 0.0]), np.array([0, 0, 0, 1])) == 0.5


def test_plane_places_drawers_with_the_human_reference(originality, recognizability, held_out,
                                                       tmp_path):
    drawings, labels, exemplars = held_out
    human = plane_point(originality, recognizability, drawings, labels, exemplars, ways=5)
    assert human[0] > 0 and 0.7 <= human[1] <= 1
    noise = np.where(np.random.default_rng(0).random(drawings.shape) < 0.15, 255, 0)
    machine = plane_point(originality, recognizability, noise.astype(np.uint8), labels,
                          exemplars, ways=5)
    assert machine[0] > human[0] and machine[1] < human[1]
    path = plane({"human": human, "noise": machine}, tmp_path / "plane.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    with pytest.raises(ValueError, match="no points"):
        plane({}, tmp_path / "empty.png")


def test_plane_highlights_the_reference_on_given_axes():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    assert plane({"kl": (0.4, 0.6), "human": (0.5, 0.9), "vq": (0.2, 0.8)}, ax) is ax
    sizes = {tuple(c.get_offsets()[0]): c.get_sizes()[0] for c in ax.collections}
    assert sizes[(0.5, 0.9)] > sizes[(0.4, 0.6)] == sizes[(0.2, 0.8)]
    assert {t.get_text() for t in ax.texts} == {"kl", "human", "vq"}
