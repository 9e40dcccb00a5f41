import pytest
import torch

from stimuli.nmf import NMF, hals_nmf, nndsvda_init
from stimuli.sae import TopKSAE
from tests.stimuli.conftest import matched_cosine, planted_dictionary


@pytest.fixture(scope="module")
def planted():
    return planted_dictionary(6000, 64, 16, active=3, seed=0)


def test_nmf_recovers_planted_atoms(planted):
    X, atoms = planted
    nmf = NMF(16, random_state=0).fit(X)
    assert matched_cosine(atoms, nmf.get_dictionary()) >= 0.95
    assert nmf.relative_error_ < 0.05
    assert nmf.explained_variance_ > 0.99
    assert nmf.dead_components_ == []
    codes = nmf.transform(X[:100])
    assert codes.shape == (100, 16) and (codes >= 0).all()
    assert torch.allclose(nmf.decode(codes), X[:100], atol=0.05)


def test_nmf_warm_start_on_a_subsample_also_recovers(planted):
    X, atoms = planted
    nmf = NMF(16, subsample=1000, random_state=1).fit(X)
    assert matched_cosine(atoms, nmf.components_) >= 0.95


@pytest.mark.parametrize("subsample", [None, 1000])
def test_nmf_reports_the_error_of_the_factors_it_returns(planted, subsample):
    # the solver returns the best pair it measured (extrapolation can raise the error)
    X, _ = planted
    nmf = NMF(16, subsample=subsample, random_state=0)
    W = nmf.fit_transform(X)
    direct = float((X - W @ nmf.components_).norm() / X.norm())
    assert nmf.relative_error_ == pytest.approx(direct, rel=1e-3)
    assert nmf.relative_error_ == min(err for _, err in nmf.history_)


def test_nmf_extrapolation_converges_faster_than_plain_hals(planted):
    X, _ = planted
    W0, H0 = nndsvda_init(X, 16, generator=torch.Generator().manual_seed(0))
    best = {}
    for extrapolate in (True, False):
        _, _, info = hals_nmf(X, W0, H0, max_iter=40, tol=0.0, extrapolate=extrapolate)
        best[extrapolate] = min(err for _, err in info["history"])
    assert best[True] < best[False]


@pytest.mark.parametrize("seed", [0, 1])
def test_nmf_stops_only_when_converged(seed):
    # no planted structure: a slow fit, where a step after an overshoot is above the best
    # error so far without the fit having converged
    X = torch.rand(3000, 64, generator=torch.Generator().manual_seed(seed)) ** 4
    nmf = NMF(16, tol=1e-6, max_iter=1000, subsample=None, random_state=0)
    W = nmf.fit_transform(X)
    _, _, info = hals_nmf(X, W, nmf.components_, max_iter=30, tol=0.0)
    later = min(err for _, err in info["history"])
    assert nmf.relative_error_ - later <= 1e-4 * nmf.relative_error_


def test_nmf_is_reproducible(planted):
    X, _ = planted
    a = NMF(8, random_state=3).fit(X[:2000]).components_
    b = NMF(8, random_state=3).fit(X[:2000]).components_
    assert torch.equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sae_recovers_planted_atoms_at_the_planted_size(planted, seed):
    X, atoms = planted
    sae = TopKSAE(16, k=3, epochs=20, decoder_bias=False, random_state=seed).fit(X)
    assert matched_cosine(atoms, sae.get_dictionary()) >= 0.95
    assert sae.relative_error_ < 0.05
    assert sae.dead_features_ == []
    codes = sae.encode(X[:100])
    assert codes.shape == (100, 16) and ((codes > 0).sum(dim=1) <= 3).all()
    assert sae.decode(codes).shape == (100, 64)


def test_sae_recovers_planted_atoms_on_other_data_and_with_a_decoder_bias():
    X, atoms = planted_dictionary(6000, 64, 16, active=3, seed=1)
    sae = TopKSAE(16, k=3, epochs=20, random_state=0).fit(X)
    assert matched_cosine(atoms, sae.get_dictionary()) >= 0.95


def test_sae_overcomplete_matches_each_planted_atom(planted):
    X, atoms = planted
    # a 2x overcomplete dictionary, as SAEs are used; each planted atom is matched to one feature
    sae = TopKSAE(32, k=3, epochs=20, decoder_bias=False, random_state=0).fit(X)
    assert matched_cosine(atoms, sae.get_dictionary()) >= 0.95
    assert sae.relative_error_ < 0.25


def test_sae_is_reproducible_and_trains_under_no_grad(planted):
    X, _ = planted
    a = TopKSAE(8, k=2, epochs=2, random_state=5).fit(X[:1000]).W_dec_
    with torch.no_grad():
        b = TopKSAE(8, k=2, epochs=2, random_state=5).fit(X[:1000]).W_dec_
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("estimator", "X", "message"),
    [
        (NMF(4), -torch.ones(10, 5), "^X has negative entries; NMF needs non-negative data$"),
        (NMF(4), torch.ones(10), r"^X must be a non-empty 2-D matrix \(N, C\), got shape \(10,\)$"),
        (
            NMF(9),
            torch.ones(10, 5),
            r"^n_components must be an int in \[1, min\(N, C\) = 5\], got 9$",
        ),
        (NMF(2), torch.full((4, 4), float("nan")), "^X contains NaN or infinite values$"),
        (TopKSAE(4, k=5), torch.ones(10, 5), r"^k must be an int in \[1, n_features = 4\], got 5$"),
        (
            TopKSAE(4, k=2, warmup=1.0),
            torch.ones(10, 5),
            r"^warmup must be in \[0, 1\), init_iters and aux_coef non-negative$",
        ),
        (
            TopKSAE(4, k=2, aux_k=0),
            torch.ones(10, 5),
            "^aux_k must be a positive int or None, got 0$",
        ),
    ],
)
def test_bad_input(estimator, X, message):
    with pytest.raises(ValueError, match=message):
        estimator.fit(X)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_sae_encode_rejects_nan_and_inf(planted, bad):
    X, _ = planted
    sae = TopKSAE(8, k=2, epochs=1, random_state=0).fit(X[:500])
    Y = X[:10].clone()
    Y[3, 5] = bad  # found through the pre-activations it reaches
    with pytest.raises(ValueError, match="^X contains NaN or infinite values$"):
        sae.encode(Y)
    assert sae.encode(X[:10]).shape == (10, 8)


@pytest.mark.parametrize("estimator", [NMF(2), TopKSAE(2, k=1)])
def test_transform_before_fit(estimator):
    with pytest.raises(ValueError, match="is not fitted yet; call fit first$"):
        estimator.encode(torch.ones(3, 4))
