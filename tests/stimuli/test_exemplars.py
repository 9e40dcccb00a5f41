import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from stimuli.activations import RunningExtremes, pool, sample_positions, tie_rank, unit_scores
from stimuli.demo_model import DemoCNN, demo_dataset, demo_preprocess
from stimuli.exemplars import ExemplarSearch
from stimuli.explain_context import UnitStatistics
from stimuli.importance import unit_importance
from stimuli.methods.exemplars import ExemplarsConfig, split_exemplars
from stimuli.nmf import NMF, nnls_codes
from tests.stimuli.conftest import planted_dictionary


@pytest.mark.parametrize("batch", [64, 5])  # merged at every batch / candidates wait (k = 7)
def test_running_extremes_match_a_full_sort(batch):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(-10, 10, (500, 6), generator=gen).float() / 4  # ties, negatives
    subset = torch.tensor([3, 250, 499])
    ext = RunningExtremes(7, subset=subset)
    for start in range(0, 500, batch):
        ext.update(torch.arange(start, min(start + batch, 500)), scores[start : start + batch])
        if start == 200:  # reading in the middle of the stream merges what waits
            assert ext.top_values_.shape == (6, 7)
    for u in range(6):
        # most extreme first, ties broken by a fixed pseudo-random rank of the image index
        rank = tie_rank(torch.arange(500)).tolist()
        top = sorted(range(500), key=lambda i: (-scores[i, u], rank[i]))[:7]
        bottom = sorted(range(500), key=lambda i: (scores[i, u], rank[i]))[:7]
        assert ext.top_indices_[u].tolist() == top
        assert ext.bottom_indices_[u].tolist() == bottom
    assert torch.equal(ext.subset_scores_, scores[subset])
    assert ext.n_seen_ == 500


def test_running_extremes_hold_the_same_memory_whatever_the_stream():
    gen = torch.Generator().manual_seed(0)
    ext = RunningExtremes(5, subset=torch.arange(0, 5000, 100))
    sizes = []
    for start in range(0, 5000, 50):
        ext.update(torch.arange(start, start + 50), torch.rand(50, 8, generator=gen))
        sizes.append(ext.nbytes())
    assert len(set(sizes)) == 1
    assert sizes[0] == 2 * 8 * 20 * (4 + 8 + 8) + 50 * 8 * 4  # buffers of 4 k, the subset


def test_pooling_and_dictionary_scores():
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # N, C, H, W
    assert torch.equal(pool(acts, "max"), acts.amax(dim=(2, 3)))
    codes = unit_scores(acts, lambda m: m[:, :2] * 2, "mean")  # an "encoder" (M, C) -> (M, 2)
    assert torch.allclose(codes, 2 * pool(acts, "mean")[:, :2])
    with pytest.raises(ValueError, match="^pooling must be one of mean, max, not 'median'$"):
        pool(acts, "median")


def stats_of(top, bottom, subset_index=(), subset_scores=()) -> UnitStatistics:
    """One unit's statistics from its ranked image indices (most extreme first)."""
    top, bottom = torch.as_tensor(np.asarray(top))[None], torch.as_tensor(np.asarray(bottom))[None]
    index = torch.as_tensor(np.asarray(subset_index, dtype=np.int64))
    scores = torch.as_tensor(np.asarray(subset_scores, dtype=np.float32))[:, None]
    return UnitStatistics(top_values=-top.float(), top_indices=top,
                          bottom_values=bottom.float(), bottom_indices=bottom,
                          subset_index=index, subset_scores=scores)


def test_zimmermann_split():
    cfg = ExemplarsConfig(n_buckets=3, n_reference_batches=2, n_query_batches=4, catch=True)
    assert cfg.n_batches == 7 and cfg.n_extremes == 21
    split = split_exemplars(stats_of(np.arange(100), np.arange(100, 200)), 0, cfg,
                            np.random.default_rng(0))
    refs_max, refs_min = split["max_refs"], split["min_refs"]
    assert len(refs_max) == 2 * 3 + 1  # two reference batches and the catch image
    assert refs_max == sorted(refs_max)  # most extreme first
    assert len(split["queries"]) == 4 and len(split["catch"]) == 1
    ((catch_max, catch_min),) = split["catch"]
    assert catch_max in refs_max and catch_min in refs_min
    query_max = [q for q, _ in split["queries"]]
    assert set(query_max).isdisjoint(refs_max)  # held out
    # each batch has one image per bucket: every query comes from the most extreme bucket
    assert all(q < 7 for q in query_max)
    # references take one image from each bucket of ranks [0, 7), [7, 14), [14, 21)
    assert sorted(r // 7 for r in refs_max) == [0, 0, 0, 1, 1, 2, 2]


def test_hard_queries_come_from_inner_percentiles():
    cfg = ExemplarsConfig(n_buckets=2, n_query_batches=3, hard_percentiles=(0.8, 0.9))
    scores = np.linspace(0, 1, 200)  # image i scores i / 199
    stats = stats_of(np.arange(199, -1, -1), np.arange(200), np.arange(200), scores)
    split = split_exemplars(stats, 0, cfg, np.random.default_rng(1))
    assert all(159 <= a <= 180 for a, _ in split["queries"])
    assert all(19 <= b <= 40 for _, b in split["queries"])


def test_split_needs_enough_extremes_and_sane_percentiles():
    with pytest.raises(ValueError, match="^top has 5 images, the split needs 18$"):
        split_exemplars(stats_of(np.arange(5), np.arange(5)), 0,
                        ExemplarsConfig(n_buckets=1, n_query_batches=16),
                        np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"hard_percentiles must satisfy 0.5 < lo < hi < 1"):
        ExemplarsConfig(hard_percentiles=(0.9, 0.8))


def test_importance_is_the_same_for_a_neuron_and_its_identity_feature(tiny_cnn):
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    neurons = unit_importance(tiny_cnn, "0", x, [0, 3, 5])
    identity = torch.eye(8)
    features = unit_importance(
        tiny_cnn, "0", x, [0, 3, 5], encoder=lambda m: m, dictionary=identity
    )
    assert torch.allclose(neurons, features, atol=1e-6)
    assert neurons.abs().sum() > 0
    with pytest.raises(ValueError, match="^give both encoder and dictionary"):
        unit_importance(tiny_cnn, "0", x, [0], dictionary=identity)


def exact_nnls(X: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Codes (N, K) row by row with scipy's active-set NNLS (Lawson & Hanson), in float64."""
    A = H.double().T.numpy()  # C, K
    return torch.tensor(np.stack([nnls(A, x)[0] for x in X.double().numpy()]))


@pytest.mark.parametrize("chunk", [None, 700])
def test_nmf_codes_are_within_tol_of_the_exact_codes(chunk):
    X, atoms = planted_dictionary(3000, 64, 16, active=3, seed=2)
    H = atoms + 0.05  # not the exact atoms: the codes need their iterations
    H = H / H.norm(dim=1, keepdim=True)
    exact = exact_nnls(X, H)
    slow = nnls_codes(X, H, tol=0.0)  # every iteration
    assert slow.shape == (3000, 16) and (slow >= 0).all()
    assert (slow.double() - exact).norm() <= 1e-5 * exact.norm()
    for tol in (1e-4, 3e-3):  # each block stops early, within about tol of the exact codes
        fast = nnls_codes(X, H, tol=tol, chunk=chunk)
        assert 0.1 * tol * exact.norm() < (fast.double() - exact).norm() <= tol * exact.norm()
    # rows do not interact: the blocks change nothing but rounding
    blocked = nnls_codes(X, H, tol=0.0, chunk=chunk)
    assert torch.allclose(blocked, slow, rtol=1e-4, atol=1e-6)


def test_nmf_codes_of_an_ill_conditioned_dictionary():
    # two nearly equal atoms and a dead one: the tiny ridge keeps the iteration stable, and
    # max_iter bounds it (the rate is 1 - 4e-4 here: the codes converge slowly, the fit less so)
    X, atoms = planted_dictionary(500, 32, 8, active=2, seed=3)
    H = torch.cat([atoms, atoms[:1] + 1e-3, torch.zeros(1, 32)])  # K = 10
    H[:9] = H[:9] / H[:9].norm(dim=1, keepdim=True)
    codes = nnls_codes(X, H, tol=1e-4)
    assert torch.isfinite(codes).all() and (codes >= 0).all() and (codes[:, 9] == 0).all()
    exact = exact_nnls(X, H[:9])
    fit = (X.double() - codes.double() @ H.double()).norm()
    assert fit <= (X.double() - exact @ H[:9].double()).norm() * 1.01


@pytest.fixture(scope="module")
def demo_search_setup():
    """The benchmark's model (the demo CNN, seeded, untrained) and layers on procedural images."""
    torch.manual_seed(0)
    model = DemoCNN().eval()
    x = demo_preprocess(demo_dataset("procedural", split="test").images[:768])  # N, 1, 28, 28
    batches = [(torch.arange(i, i + 256), x[i : i + 256]) for i in range(0, 768, 256)]
    positions = sample_positions(
        model,
        ["block2", "block3"],
        batches,
        per_image=8,
        max_samples=4000,
        generator=torch.Generator().manual_seed(0),
    )
    return model, batches, positions


def test_fast_nmf_encoder_gives_the_slow_paths_exemplars(demo_search_setup):
    model, batches, positions = demo_search_setup
    fast, slow = {}, {}
    for layer in ("block2", "block3"):
        nmf = NMF(8, random_state=0).fit(positions[layer].clamp(min=0))
        fast[(layer, "nmf")] = nmf.encode
        slow[(layer, "nmf")] = NMF(8, transform_tol=0.0).load_state(nmf.state()).encode
        X = positions[layer][:2000].clamp(min=0)
        # about transform_tol (1e-4) apart: both within it of the exact codes
        assert (nmf.encode(X) - slow[(layer, "nmf")](X)).norm() <= 2e-4 * nmf.encode(X).norm()
    a = ExemplarSearch(20).fit(model, fast, batches)
    b = ExemplarSearch(20).fit(model, slow, batches)
    for key in fast:
        for side in ("top_indices_", "bottom_indices_"):
            ia, ib = getattr(a.extremes_[key], side), getattr(b.extremes_[key], side)  # U, 20
            # the same images; near-equal scores may swap neighbouring ranks
            assert [set(r) for r in ia.tolist()] == [set(r) for r in ib.tolist()]
            assert (ia == ib).float().mean() >= 0.95
