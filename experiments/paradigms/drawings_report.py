"""The drawing paradigms' report section: accuracy by drawer (a person, or a model named by
its regularizer), with participant-bootstrap intervals against chance.

It groups main trials by the ``drawer`` column, so it needs no study file. The GLMM that
compares drawers (``correct ~ drawer + (1|participant) + (1|unit_id)``, categories as the
units) is fitted by the report itself, from the paradigm's ``factor``: a paradigm may not
import the analysis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from experiments.paradigms.base import Section
from experiments.paradigms.drawings import drawer_order
from experiments.paradigms.two_afc_report import N_BOOT, participant_interval

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def accuracy_by_drawer(main: pd.DataFrame) -> pd.DataFrame:
    """One row per drawer: the conditions that showed it, participants, categories,
    trials, pooled accuracy, and the mean of participants' accuracies with its interval."""
    import pandas as pd  # the report's library: the participant server never imports it

    rng = np.random.default_rng(0)
    drawer = main["drawer"].astype(str)
    rows = []
    for level in drawer_order(set(drawer)):
        cell = main[drawer == level]
        per_p = cell.groupby(cell["participant"].astype(str))["correct"].mean().to_numpy()
        lo, hi = participant_interval(per_p.astype(float), rng)
        rows.append((level, ", ".join(sorted(set(cell["condition"].astype(str)))), len(per_p),
                     cell["unit_id"].nunique() if "unit_id" in cell else np.nan, len(cell),
                     float(cell["correct"].mean()), float(per_p.mean()), lo, hi))
    return pd.DataFrame(rows, columns=["drawer", "conditions", "participants", "categories",
                                       "trials", "accuracy", "participant_mean", "lower",
                                       "upper"])


def _plot(table: pd.DataFrame, chance: float) -> Figure:
    from matplotlib.figure import Figure  # drawn for the report only

    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.subplots()
    x = np.arange(len(table))
    mean = table["participant_mean"].to_numpy()
    err = np.vstack([mean - table["lower"].to_numpy(), table["upper"].to_numpy() - mean])
    ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", color="#1f6fb2", capsize=4,
                label="mean of participants, 95 % CI")
    ax.axhline(chance, color="#888", ls="--", lw=1, label="chance")
    ax.set_xticks(x, table["drawer"].tolist(), rotation=20 if len(x) > 4 else 0)
    ax.set_xlabel("drawer")
    ax.set_ylabel("proportion correct")
    ax.set_ylim(min(0.0, float(np.nanmin(table["lower"].fillna(1))) - 0.05), 1.02)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return fig


def drawer_section(trials: pd.DataFrame, title: str, correct: str) -> Section | None:
    """The section from the report's flagged trials of one drawing paradigm; ``correct``
    says what a correct answer is. None without main trials that name their drawer."""
    if "drawer" not in trials:
        return None
    main = trials[(trials["trial_kind"].astype(str) == "main") & ~trials["excluded"]]
    main = main[main["drawer"].notna()]
    if main.empty:
        return None
    chance = float(main["chance"].mean()) if "chance" in main else 0.5
    table = accuracy_by_drawer(main)
    return Section(
        title=title,
        paragraphs=(
            f"Main trials of included participants by drawer; correct: {correct}. The "
            f"interval is a 95 % participant-bootstrap interval ({N_BOOT} resamples, seed 0) "
            f"of the mean of participants' accuracies; dashed: chance ({chance:.3g}).",
            "The report's model 'Accuracy by drawer' compares the drawers with participants "
            "and categories (unit_id) as crossed random intercepts.",
        ),
        tables=((title, table),),
        figures=((title, _plot(table, chance)),),
    )
