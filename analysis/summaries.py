"""Psychophysics summaries: accuracy with cluster-bootstrap intervals, 2AFC d', multiple-
comparison corrections and the utility score of Colin et al. (NeurIPS 2022).

Accuracy in a cell (say condition x layer) is summarised three ways, because the trials are
not independent: ``accuracy`` pools the trials, ``participant_mean`` averages the
participants' accuracies (the figure papers such as Borowski et al. 2021 report) and
``unit_mean`` averages the units' accuracies. Each mean gets a percentile interval from a
bootstrap that resamples its own clusters (participants, or units) within the cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

MAIN = ("main",)


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_mean_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` (one value per cluster).

    Vectorized: one (n_boot, n) matrix of resampled indices. Returns (nan, nan) for fewer
    than two clusters.
    """
    values = np.asarray(values, dtype=float)
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, not {n_boot}")
    if len(values) < 2:
        return float("nan"), float("nan")
    idx = rng.integers(len(values), size=(n_boot, len(values)))  # (B, n)
    means = values[idx].mean(axis=1)  # (B,)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def dprime_2afc(k: np.ndarray | int, n: np.ndarray | int) -> np.ndarray:
    """d' for two-alternative forced choice from k correct of n: sqrt(2) * z(k / n).

    An unbiased 2AFC observer with sensitivity d' is correct with probability Φ(d'/√2)
    (Macmillan & Creelman 2005, ch. 7). Proportions of exactly 0 or 1 would give ∓∞; they
    are replaced by 1/(2n) and 1 - 1/(2n) (Macmillan & Kaplan 1985), so a perfect score over
    n trials reads as 'at least this good'. Other proportions are used as they are.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if np.any(n <= 0):
        raise ValueError("n must be positive")
    if np.any((k < 0) | (k > n)):
        raise ValueError("k must be between 0 and n")
    pc = k / n
    pc = np.where(k == 0, 1 / (2 * n), np.where(k == n, 1 - 1 / (2 * n), pc))
    return np.sqrt(2) * stats.norm.ppf(pc)


def adjust_pvalues(p: Sequence[float] | np.ndarray, method: str = "holm",
                   alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm (family-wise) or Benjamini–Hochberg (false discovery rate) adjustment.

    Returns (reject, adjusted p) in the input order, as
    ``statsmodels.stats.multitest.multipletests`` with method ``"holm"`` or ``"fdr_bh"``.
    """
    p = np.asarray(p, dtype=float)
    if p.ndim != 1:
        raise ValueError("p-values must be a one-dimensional sequence")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be numbers between 0 and 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "fdr_bh":
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    else:
        raise ValueError(f"method must be 'holm' or 'fdr_bh', not {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out <= alpha, out


def _main(trials: pd.DataFrame, kinds: Sequence[str], included_only: bool) -> pd.DataFrame:
    t = trials[trials["trial_kind"].isin(list(kinds))]
    if included_only and "excluded" in t:
        t = t[~t["excluded"]]
    return t


def cluster_accuracy(trials: pd.DataFrame, cluster: str, by: Sequence[str] = ("condition",),
                     kinds: Sequence[str] = MAIN, included_only: bool = True) -> pd.DataFrame:
    """Accuracy per cluster (participant or unit_id) within each cell of ``by``."""
    t = _main(trials, kinds, included_only)
    keys = [*by, cluster]
    g = t.groupby(keys, observed=True)["correct"]
    return pd.DataFrame({"n": g.size(), "correct": g.sum(), "accuracy": g.mean()}).reset_index()


def accuracy_table(trials: pd.DataFrame, by: Sequence[str] = ("condition", "layer"),
                   kinds: Sequence[str] = MAIN, included_only: bool = True,
                   n_boot: int = 2000, level: float = 0.95,
                   seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """Accuracy per cell of ``by`` with participant- and unit-level bootstrap intervals.

    Columns: the ``by`` columns, n_trials, n_participants, n_units, accuracy (pooled),
    dprime (from the pooled count, see :func:`dprime_2afc`), participant_mean,
    participant_lower, participant_upper, unit_mean, unit_lower, unit_upper.
    Only trials of ``kinds`` count, and only included participants when the trials carry
    exclusion flags. One generator serves all cells in order, so results are reproducible.
    """
    by = list(by)
    missing = [c for c in by if c not in trials]
    if missing:
        raise ValueError(f"no column(s) {', '.join(missing)} to group by")
    rng = _rng(seed)
    t = _main(trials, kinds, included_only)
    if t.empty:
        raise ValueError(f"no {'/'.join(kinds)} trials to summarise")
    per_p = cluster_accuracy(t, "participant", by, kinds, included_only=False)
    per_u = cluster_accuracy(t, "unit_id", by, kinds, included_only=False)
    p_groups = dict(list(per_p.groupby(by, observed=True)["accuracy"]))
    u_groups = dict(list(per_u.groupby(by, observed=True)["accuracy"]))
    rows = []
    for key, cell in t.groupby(by, observed=True):
        p_acc, u_acc = p_groups[key].to_numpy(), u_groups[key].to_numpy()
        p_lo, p_hi = bootstrap_mean_ci(p_acc, rng, n_boot, level)
        u_lo, u_hi = bootstrap_mean_ci(u_acc, rng, n_boot, level)
        k, n = int(cell["correct"].sum()), len(cell)
        two_choice = "chance" not in cell or bool((cell["chance"] == 0.5).all())
        dprime = float(dprime_2afc(k, n)) if two_choice else float("nan")
        rows.append((*key, n, len(p_acc), len(u_acc), k / n, dprime,
                     p_acc.mean(), p_lo, p_hi, u_acc.mean(), u_lo, u_hi))
    out = pd.DataFrame(rows, columns=[*by, "n_trials", "n_participants", "n_units",
                                      "accuracy", "dprime", "participant_mean",
                                      "participant_lower", "participant_upper", "unit_mean",
                                      "unit_lower", "unit_upper"])
    return _keep_levels(out, trials, by)


def _keep_levels(out: pd.DataFrame, trials: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Give the grouping columns back their categorical levels (and so their order)."""
    for col in by:
        if isinstance(trials[col].dtype, pd.CategoricalDtype):
            out[col] = pd.Categorical(out[col], categories=trials[col].cat.categories)
    return out


def chance_tests(trials: pd.DataFrame, by: Sequence[str] = ("condition", "layer"),
                 kinds: Sequence[str] = MAIN, included_only: bool = True,
                 chance: float | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Is accuracy in each cell above chance? One-sample t tests on participants' accuracies
    (participants are the unit of replication), with Holm and BH adjustments across cells.

    Chance is ``chance`` if given, else each cell's from the trials' ``chance`` column (the
    paradigm's: 1/2 for 2AFC, 1/n for intruder detection), else 0.5."""
    per_p = cluster_accuracy(trials, "participant", by, kinds, included_only)
    levels = _main(trials, kinds, included_only)
    if chance is None and "chance" in levels:
        cell_chance = levels.groupby(list(by), observed=True)["chance"].mean()
    else:
        cell_chance = None
    rows = []
    for key, cell in per_p.groupby(list(by), observed=True):
        acc = cell["accuracy"].to_numpy()
        level = chance if chance is not None else (
            float(cell_chance.loc[key]) if cell_chance is not None else 0.5)
        if len(acc) < 2 or np.ptp(acc) == 0:
            t_stat, p = float("nan"), float("nan")
        else:
            res = stats.ttest_1samp(acc, level)
            t_stat, p = float(res.statistic), float(res.pvalue)
        rows.append((*key, len(acc), level, acc.mean(), t_stat, p))
    out = _keep_levels(pd.DataFrame(rows, columns=[*by, "n_participants", "chance",
                                                   "participant_mean", "t", "p"]), trials, by)
    ok = out["p"].notna().to_numpy()
    for method in ("holm", "fdr_bh"):
        out[f"p_{method}"] = np.nan
        if ok.any():
            _, adj = adjust_pvalues(out.loc[ok, "p"].to_numpy(), method, alpha)
            out.loc[ok, f"p_{method}"] = adj
    return out


def utility_scores(trials: pd.DataFrame, baseline: str | Sequence[str],
                   methods: Sequence[str] | None = None, by: str = "condition",
                   kinds: Sequence[str] = MAIN, included_only: bool = True,
                   n_boot: int = 2000, level: float = 0.95,
                   seed: int | np.random.Generator = 0) -> pd.DataFrame:
    """Utility of each method (Colin et al., NeurIPS 2022, "What I cannot predict, I do not
    understand"): the mean over sessions of the session's accuracy with the method divided
    by the same session's accuracy at baseline (``baseline`` may name several levels of
    ``by``, pooled). Needs the method and the baseline within sessions (participants).

    Sessions that lack either, or whose baseline accuracy is 0 (the ratio is undefined),
    are left out and counted in ``n_dropped``. The interval resamples sessions.
    Columns: method, baseline, utility, lower, upper, n_sessions, n_dropped.
    """
    base = [baseline] if isinstance(baseline, str) else list(baseline)
    t = _main(trials, kinds, included_only)
    levels = t[by].astype("string")
    unknown = [b for b in base if b not in set(levels.dropna())]
    if unknown:
        raise ValueError(f"baseline level(s) {', '.join(unknown)} not found in column {by!r}")
    if methods is None:
        methods = [m for m in pd.unique(levels.dropna()) if m not in base]
    rng = _rng(seed)
    sessions = t["participant"].astype("string")
    base_acc = t[levels.isin(base)].groupby(sessions, observed=True)["correct"].mean()
    rows = []
    for method in methods:
        acc = t[levels == method].groupby(sessions, observed=True)["correct"].mean()
        if acc.empty:
            raise ValueError(f"method {method!r} not found in column {by!r}")
        both = pd.concat([acc, base_acc], axis=1, keys=["m", "b"], join="outer")
        usable = both.dropna()
        usable = usable[usable["b"] > 0]
        ratio = (usable["m"] / usable["b"]).to_numpy()
        lo, hi = bootstrap_mean_ci(ratio, rng, n_boot, level)
        rows.append((method, "+".join(base), ratio.mean() if len(ratio) else np.nan, lo, hi,
                     len(ratio), len(both) - len(ratio)))
    return pd.DataFrame(rows, columns=["method", "baseline", "utility", "lower", "upper",
                                       "n_sessions", "n_dropped"])
