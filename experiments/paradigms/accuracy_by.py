"""Accuracy by one column of the trials (the references shown, the drawer, ...), with a
participant-bootstrap interval and a plot against chance: what the paradigms' report
sections share.

A paradigm may not import the analysis (it comes after experiments), so the interval is the
one of ``analysis.summaries.bootstrap_mean_ci``, computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

N_BOOT = 2000  # participant-bootstrap resamples (seed 0: the sections are reproducible)


def participant_interval(accuracy: np.ndarray, rng: np.random.Generator,
                         n_boot: int = N_BOOT) -> tuple[float, float]:
    """95 % percentile interval of the mean of participants' accuracies (nan for fewer than
    two participants)."""
    if len(accuracy) < 2:
        return float("nan"), float("nan")
    means = accuracy[rng.integers(len(accuracy), size=(n_boot, len(accuracy)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def accuracy_by(main: pd.DataFrame, column: str, levels: Sequence[str], *,
                units: str | None = None) -> pd.DataFrame:
    """One row per level of ``column`` (in the order given): the conditions that showed it,
    participants, (``units``: the number of distinct unit_ids, under that name), trials,
    pooled accuracy, and the mean of participants' accuracies with its interval."""
    import pandas as pd  # the report's library: the participant server never imports it

    rng = np.random.default_rng(0)
    values = main[column].astype(str)
    rows = []
    for level in levels:
        cell = main[values == level]
        per_p = cell.groupby(cell["participant"].astype(str))["correct"].mean().to_numpy()
        lo, hi = participant_interval(per_p.astype(float), rng)
        row = {column: level, "conditions": ", ".join(sorted(set(cell["condition"].astype(str)))),
               "participants": len(per_p)}
        if units:
            row[units] = cell["unit_id"].nunique() if "unit_id" in cell else np.nan
        rows.append({**row, "trials": len(cell), "accuracy": float(cell["correct"].mean()),
                     "participant_mean": float(per_p.mean()), "lower": lo, "upper": hi})
    return pd.DataFrame(rows)


def accuracy_plot(table: pd.DataFrame, column: str, xlabel: str, chance: float) -> Figure:
    """The participants' mean accuracy per level with its interval, and chance dashed."""
    from matplotlib.figure import Figure  # drawn for the report only

    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.subplots()
    x = np.arange(len(table))
    mean = table["participant_mean"].to_numpy()
    err = np.vstack([mean - table["lower"].to_numpy(), table["upper"].to_numpy() - mean])
    ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", color="#1f6fb2", capsize=4,
                label="mean of participants, 95 % CI")
    ax.axhline(chance, color="#888", ls="--", lw=1, label="chance")
    ax.set_xticks(x, table[column].tolist(), rotation=20 if len(x) > 4 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("proportion correct")
    ax.set_ylim(min(0.0, float(np.nanmin(table["lower"].fillna(1))) - 0.05), 1.02)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return fig
