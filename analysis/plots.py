"""The report's figures: matplotlib on its Agg canvas (no pyplot state), each returned as a
base64 PNG for embedding, so that the report page loads nothing from anywhere."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

import analysis
from analysis.covariates import unit_covariate

COLORS = ["#1f6fb2", "#d9730d", "#2e9e5b", "#a33ea1", "#7a6a00", "#c0392b", "#5b6770"]


def png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def level_names(series: pd.Series) -> list[str]:
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna())
        return [str(c) for c in series.cat.categories if c in present]
    return sorted(str(v) for v in series.dropna().unique())


def palette(levels: Sequence[str]) -> dict[str, str]:
    """One colour per condition, the same in every plot."""
    return {c: COLORS[i % len(COLORS)] for i, c in enumerate(levels)}


def _chance(ax, chance: Sequence[float], label: bool = False) -> None:
    """Dashed lines at the chance levels (one per paradigm setting in the data)."""
    for i, level in enumerate(chance):
        ax.axhline(level, color="#888", lw=1, ls="--", label="chance" if label and i == 0
                   else None)


def plot_accuracy(table: pd.DataFrame, x: str, colors: Mapping[str, str],
                  chance: Sequence[float] = (0.5,)) -> str:
    """Participant means with their bootstrap intervals, one series per condition."""
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    conditions = level_names(table["condition"])
    xs = level_names(table[x])
    width = 0.7 / max(len(conditions), 1)
    for i, cond in enumerate(conditions):
        rows = table[table["condition"].astype(str) == cond]
        pos = np.array([xs.index(str(v)) for v in rows[x]]) + (i - (len(conditions) - 1) / 2) \
            * width
        mean = rows["participant_mean"].to_numpy()
        err = np.vstack([mean - rows["participant_lower"], rows["participant_upper"] - mean])
        ax.errorbar(pos, mean, yerr=np.nan_to_num(err), fmt="o", color=colors[cond],
                    capsize=3, label=cond)
    _chance(ax, chance, label=True)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(x)
    ax.set_ylabel("proportion correct")
    ax.set_ylim(min(0.0, float(np.nanmin(table["participant_lower"].fillna(1))) - 0.05), 1.02)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def plot_strip(per: pd.DataFrame, title: str, ylabel: str, colors: Mapping[str, str],
               chance: Sequence[float] = (0.5,)) -> str:
    """Accuracy per cluster (participant or unit) and condition; excluded ones as red x."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    conditions = level_names(per["condition"])
    rng = np.random.default_rng(0)  # jitter only
    for i, cond in enumerate(conditions):
        rows = per[per["condition"].astype(str) == cond]
        out = rows["excluded"].to_numpy() if "excluded" in rows else np.zeros(len(rows), bool)
        jitter = i + rng.uniform(-0.18, 0.18, len(rows))
        ax.scatter(jitter[~out], rows["accuracy"][~out], s=18, alpha=0.7, color=colors[cond])
        if out.any():
            ax.scatter(jitter[out], rows["accuracy"][out], s=30, marker="x", color="#c0392b",
                       label="excluded")
        ax.plot([i - 0.3, i + 0.3], [rows["accuracy"][~out].mean()] * 2, color="black", lw=2)
    _chance(ax, chance)
    ax.set_xticks(range(len(conditions)), conditions)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:1], labels[:1], frameon=False, fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def plot_forest(result: analysis.GLMMResult, title: str) -> str:
    """Fixed effects with 95 % Wald intervals (a forest plot), intercept first."""
    ci = result.wald_ci()
    names = list(result.fixef.index)
    fig = Figure(figsize=(5.2, 0.5 + 0.38 * len(names)))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.errorbar(result.fixef.to_numpy(), y, fmt="o", color="#1f77b4", capsize=3,
                xerr=[result.fixef - ci["lower"], ci["upper"] - result.fixef])
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("estimate (log-odds)" if result.family.startswith("binomial")
                  else "estimate")
    ax.set_title(title, fontsize=10)
    return png(fig)


def plot_rt(main: pd.DataFrame, colors: Mapping[str, str]) -> str:
    """Distribution of response times per condition, log-spaced bins."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    rt = main["rt_ms"].to_numpy() / 1000
    ok = rt > 0
    if ok.any():
        bins = np.geomspace(rt[ok].min(), rt[ok].max() * 1.001, 40)
        for cond in level_names(main["condition"]):
            sel = ok & (main["condition"].astype(str) == cond).to_numpy()
            if not sel.any():
                continue
            ax.hist(rt[sel], bins=bins, histtype="step", lw=1.6, color=colors[cond],
                    label=f"{cond} (median {np.median(rt[sel]):.2f} s)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel("response time (s, log scale)")
    ax.set_ylabel("trials")
    ax.set_title("Response times, main trials", fontsize=10)
    return png(fig)


def plot_confidence(main: pd.DataFrame, colors: Mapping[str, str],
                    chance: Sequence[float] = (0.5,)) -> str:
    """Proportion correct at each confidence rating, per condition (calibration)."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    for cond in level_names(main["condition"]):
        rows = main[main["condition"].astype(str) == cond]
        acc = rows.groupby("confidence")["correct"].agg(["mean", "size"])
        ax.plot(acc.index.astype(int), acc["mean"], "o-", color=colors[cond], label=cond)
    levels = sorted(main["confidence"].dropna().unique())
    ax.set_xticks([int(v) for v in levels])
    _chance(ax, chance)
    ax.set_xlabel("confidence rating")
    ax.set_ylabel("proportion correct")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Accuracy by confidence, main trials", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return png(fig)


def plot_covariates(per_u: pd.DataFrame, trials: pd.DataFrame, trends: pd.DataFrame,
                    colors: Mapping[str, str], chance: Sequence[float] = (0.5,)) -> str:
    """Each unit's accuracy against each standardized covariate in ``trends``
    (:func:`analysis.covariates.covariate_trends`), one panel per covariate, with each
    condition's least-squares line and r."""
    names = list(dict.fromkeys(trends["covariate"]))
    ncols = min(len(names), 3)
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        units, col = unit_covariate(per_u, trials, name), f"{name}_z"
        for row in trends[trends["covariate"] == name].itertuples(index=False):
            sel = units[units["condition"].astype(str) == row.condition]
            r = f"r = {row.r:.2f}" if np.isfinite(row.r) else "r undefined"
            ax.scatter(sel[col], sel["accuracy"], s=18, alpha=0.7, color=colors[row.condition],
                       label=f"{row.condition} ({r}, {row.n_units} units)")
            if np.isfinite(row.slope):
                xs = np.array([sel[col].min(), sel[col].max()])
                ax.plot(xs, row.intercept + row.slope * xs, color=colors[row.condition], lw=1.6)
        _chance(ax, chance)
        ax.set_xlabel(f"{name} (z within source x layer)")
        ax.set_ylabel("proportion correct")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"Unit accuracy against {name}", fontsize=10)
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    return png(fig)


def plot_funnel(funnel: pd.DataFrame) -> str:
    """Participants and main trials left after each exclusion step, first step on top."""
    fig = Figure(figsize=(9, 0.9 + 0.34 * len(funnel)))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(funnel))[::-1]
    for ax, col in zip(axes, ("participants", "main_trials"), strict=True):
        values = funnel[col].to_numpy()
        ax.barh(y, values, height=0.6, color=COLORS[0])
        for yi, v in zip(y, values, strict=True):
            ax.text(v, yi, f" {v}", va="center", fontsize=8)
        ax.set_xlim(0, max(int(values.max()), 1) * 1.15)
        ax.set_xlabel(col.replace("_", " ") + " remaining")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, funnel["step"], fontsize=8)
    return png(fig)


# -- tables ----------------------------------------------------------------------------
