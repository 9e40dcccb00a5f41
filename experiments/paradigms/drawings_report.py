"""The drawing paradigms' report section: accuracy by drawer (a person, or a model named by
its regularizer), with participant-bootstrap intervals against chance.

It groups main trials by the ``drawer`` column, so it needs no study file. The GLMM that
compares drawers (``correct ~ drawer + (1|participant) + (1|unit_id)``, categories as the
units) is fitted by the report itself, from the paradigm's ``factor``: a paradigm may not
import the analysis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from experiments.paradigms.accuracy_by import N_BOOT, accuracy_by, accuracy_plot
from experiments.paradigms.base import Section
from experiments.paradigms.drawings import drawer_order

if TYPE_CHECKING:
    import pandas as pd


def accuracy_by_drawer(main: pd.DataFrame) -> pd.DataFrame:
    """One row per drawer (see :func:`accuracy_by`), with the categories it drew."""
    return accuracy_by(main, "drawer", drawer_order(set(main["drawer"].astype(str))),
                       units="categories")


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
        figures=((title, accuracy_plot(table, "drawer", "drawer", chance)),),
    )
