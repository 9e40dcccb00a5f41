"""Bootstrap accuracy tables, 2AFC d', Holm / BH against statsmodels, and utility scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.exclusions import apply_exclusions
from analysis.summaries import (
    accuracy_table,
    adjust_pvalues,
    bootstrap_mean_ci,
    chance_tests,
    dprime_2afc,
    utility_scores,
)
from tests.analysis.test_exclusions import make_trials


def test_dprime_2afc_known_values_and_extremes():
    # pc = Φ(d'/√2): d' = 1 gives pc = 0.7602; chance is 0.
    assert dprime_2afc(76.02499, 100) == pytest.approx(1.0, abs=1e-4)
    assert dprime_2afc(50, 100) == 0.0
    assert dprime_2afc(30, 100) < 0
    # 0 and 1 become 1/(2n) and 1 - 1/(2n).
    np.testing.assert_allclose(dprime_2afc([0, 20], [20, 20]),
                               np.sqrt(2) * stats.norm.ppf([1 / 40, 39 / 40]))
    assert np.all(np.isfinite(dprime_2afc([0, 1, 5], [5, 5, 5])))


@pytest.mark.parametrize("k, n, message", [
    (3, 0, "^n must be positive$"),
    (-1, 5, "^k must be between 0 and n$"),
    (6, 5, "^k must be between 0 and n$"),
])
def test_dprime_bad_inputs(k, n, message):
    with pytest.raises(ValueError, match=message):
        dprime_2afc(k, n)


@pytest.mark.parametrize("method", ["holm", "fdr_bh"])
def test_adjustments_match_statsmodels(method):
    rng = np.random.default_rng(1)
    for size in (1, 2, 7, 50):
        p = np.concatenate([rng.uniform(0, 0.05, size // 2), rng.uniform(0, 1, size - size // 2)])
        p = rng.permutation(p)
        p[0] = p[-1]  # a tie
        reject, adj = adjust_pvalues(p, method, alpha=0.05)
        ref_reject, ref_adj, _, _ = multipletests(p, alpha=0.05, method=method)
        np.testing.assert_allclose(adj, ref_adj, rtol=1e-12)
        np.testing.assert_array_equal(reject, ref_reject)


@pytest.mark.parametrize("p, kwargs, message", [
    ([0.1, np.nan], {}, "^p-values must be numbers between 0 and 1$"),
    ([0.1, 1.2], {}, "^p-values must be numbers between 0 and 1$"),
    ([[0.1]], {}, "^p-values must be a one-dimensional sequence$"),
    ([0.1], {"method": "bonferroni"}, "^method must be 'holm' or 'fdr_bh', not 'bonferroni'$"),
    ([0.1], {"alpha": 0}, "^alpha must be between 0 and 1, not 0$"),
])
def test_adjust_bad_inputs(p, kwargs, message):
    with pytest.raises(ValueError, match=message):
        adjust_pvalues(p, **kwargs)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.linspace(0.4, 1.0, 12)
    a = bootstrap_mean_ci(values, np.random.default_rng(5), 4000)
    b = bootstrap_mean_ci(values, np.random.default_rng(5), 4000)
    assert a == b
    lo, hi = a
    assert lo < values.mean() < hi
    se = values.std(ddof=0) / np.sqrt(len(values))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert np.isnan(bootstrap_mean_ci(values[:1], np.random.default_rng(0))).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"level": 1.0}, "^level must be between 0 and 1, not 1.0$"),
    ({"n_boot": 0}, "^n_boot must be at least 1, not 0$"),
])
def test_bootstrap_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_mean_ci(np.ones(3), np.random.default_rng(0), **kwargs)


@pytest.fixture(scope="module")
def trials():
    people = {f"P-{i}": {"condition": "neurons" if i < 4 else "dictionary",
                         "accuracy": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.95, 0.85][i]}
              for i in range(8)}
    people["P-bad"] = {"condition": "neurons", "accuracy": 0.0, "catch_correct": 0}
    return apply_exclusions(make_trials(people), {"catch_min_accuracy": 0.5}).trials


def test_accuracy_table_by_condition(trials):
    table = accuracy_table(trials, ["condition"], n_boot=500, seed=0).set_index("condition")
    # P-bad (excluded) is left out: neurons = mean of 0.5, 0.6, 0.7, 0.8.
    assert table.loc["neurons", "participant_mean"] == pytest.approx(0.65)
    assert table.loc["neurons", "n_participants"] == 4
    assert table.loc["dictionary", "accuracy"] == pytest.approx(0.925)
    assert table.loc["neurons", "n_trials"] == 80
    assert table.loc["neurons", "dprime"] == pytest.approx(np.sqrt(2) * stats.norm.ppf(0.65))
    for who in ("participant", "unit"):
        assert (table[f"{who}_lower"] <= table[f"{who}_mean"]).all()
        assert (table[f"{who}_mean"] <= table[f"{who}_upper"]).all()
    again = accuracy_table(trials, ["condition"], n_boot=500, seed=0).set_index("condition")
    pd.testing.assert_frame_equal(table, again)
    everyone = accuracy_table(trials, ["condition"], n_boot=10, included_only=False)
    assert everyone.set_index("condition").loc["neurons", "n_participants"] == 5


def test_accuracy_table_cells_keep_their_levels(trials):
    table = accuracy_table(trials, ["condition", "layer"], n_boot=100)
    assert len(table) == 4
    assert isinstance(table["condition"].dtype, pd.CategoricalDtype)
    assert table["n_units"].tolist() == [2, 2, 2, 2]


def test_accuracy_table_bad_inputs(trials):
    with pytest.raises(ValueError, match="^no column"):
        accuracy_table(trials, ["colour"])
    with pytest.raises(ValueError, match="^no repeated trials to summarise$"):
        accuracy_table(trials, ["condition"], kinds=["repeated"])


def test_chance_tests_adjust_across_cells(trials):
    tests = chance_tests(trials, ["condition"])
    neurons = np.array([0.5, 0.6, 0.7, 0.8])
    p = stats.ttest_1samp(neurons, 0.5).pvalue
    row = tests.set_index("condition").loc["neurons"]
    assert row["p"] == pytest.approx(p)
    np.testing.assert_allclose(tests["p_holm"], multipletests(tests["p"], method="holm")[1])
    np.testing.assert_allclose(tests["p_fdr_bh"], multipletests(tests["p"], method="fdr_bh")[1])


def within_subject() -> pd.DataFrame:
    """Each participant sees three methods: 'none' (baseline), 'saliency', 'exemplars'."""
    rows = []
    accuracy = {"P-1": (0.5, 0.6, 0.9), "P-2": (0.8, 0.8, 1.0), "P-3": (0.0, 0.5, 0.5)}
    for pid, accs in accuracy.items():
        for method, acc in zip(("none", "saliency", "exemplars"), accs, strict=True):
            for i in range(10):
                rows.append({"participant": pid, "condition": method, "trial_kind": "main",
                             "correct": i < round(acc * 10)})
    return pd.DataFrame(rows).astype({"condition": "category", "trial_kind": "category"})


def test_utility_is_the_mean_of_per_session_ratios():
    scores = utility_scores(within_subject(), "none", n_boot=200).set_index("method")
    # P-3 has baseline accuracy 0: its ratio is undefined and it is left out.
    assert scores.loc["saliency", "utility"] == pytest.approx((0.6 / 0.5 + 0.8 / 0.8) / 2)
    assert scores.loc["exemplars", "utility"] == pytest.approx((0.9 / 0.5 + 1.0 / 0.8) / 2)
    assert scores["n_sessions"].tolist() == [2, 2]
    assert scores["n_dropped"].tolist() == [1, 1]
    pooled = utility_scores(within_subject(), ["none", "saliency"], methods=["exemplars"])
    assert pooled.loc[0, "utility"] == pytest.approx(
        np.mean([0.9 / 0.55, 1.0 / 0.8, 0.5 / 0.25]))
    assert pooled.loc[0, "baseline"] == "none+saliency"


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": "nothing"}, "^baseline level\\(s\\) nothing not found in column 'condition'$"),
    ({"baseline": "none", "methods": ["magic"]},
     "^method 'magic' not found in column 'condition'$"),
])
def test_utility_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        utility_scores(within_subject(), **kwargs)
