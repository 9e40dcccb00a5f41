"""The 2AFC report's section: accuracy by reference condition (natural, synthetic, both,
none, accentuated ...), the comparison of Borowski et al. (2021) and Zimmermann et al. (2021).

It groups main trials by the ``references`` column (what each trial showed), so it needs no
study file; it says how these groups relate to the study's conditions, which the report's
GLMM compares, and which conditions had no catch trials to exclude anyone by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from experiments.paradigms.accuracy_by import N_BOOT, accuracy_by, accuracy_plot
from experiments.paradigms.base import Section

if TYPE_CHECKING:
    import pandas as pd

NO_REFERENCES = "none"  # the `references` of a trial that showed none


def _order(levels: list[str]) -> list[str]:
    """Reference conditions sorted, ``none`` (the baseline) last."""
    return sorted(levels, key=lambda v: (v == NO_REFERENCES, v))


def accuracy_by_references(main: pd.DataFrame) -> pd.DataFrame:
    """One row per ``references`` value of the main trials (see :func:`accuracy_by`)."""
    return accuracy_by(main, "references", _order(sorted(set(main["references"].astype(str)))))


def _glmm_note(main: pd.DataFrame) -> str:
    pairs = main[["condition", "references"]].astype(str).drop_duplicates()
    one_to_one = not pairs["condition"].duplicated().any() and \
        not pairs["references"].duplicated().any()
    if one_to_one:
        return ("Each condition showed one kind of references, and no two conditions the same "
                "kind: the report's models, which compare conditions, compare these groups.")
    return ("Reference conditions and study conditions do not coincide (see the conditions "
            "column): the report's models compare conditions, this table groups the same "
            "trials by the references they showed.")


def _catch_note(trials: pd.DataFrame) -> str | None:
    kinds = trials["trial_kind"].astype(str)
    conditions = trials["condition"].astype(str)
    with_catch = set(conditions[kinds == "catch"])
    without = sorted(set(conditions[kinds == "main"]) - with_catch)
    if not with_catch or not without:
        return None
    return (f"Condition(s) {', '.join(without)} had no catch trials (a condition without "
            "references has nothing a catch trial could be obvious against): the catch-trial "
            "exclusion rule cannot exclude their participants, so the other rules alone "
            "apply to them.")


def references_section(trials: pd.DataFrame, chance: float) -> Section | None:
    """The section, from the report's flagged 2AFC trials; None when the trials do not say
    which references they showed (exports of before the ``references`` column)."""
    if "references" not in trials:
        return None
    main = trials[(trials["trial_kind"].astype(str) == "main") & ~trials["excluded"]]
    main = main[main["references"].notna()]
    if main.empty:
        return None
    table = accuracy_by_references(main)
    paragraphs = [
        "Main trials of included participants by the references each trial showed (method "
        "ids joined by '+'; 'none': no references). The interval is a 95 % participant-"
        f"bootstrap interval ({N_BOOT} resamples, seed 0) of the mean of participants' "
        f"accuracies; dashed: chance ({chance:g}).",
        _glmm_note(main),
    ]
    catch = _catch_note(trials)
    if catch:
        paragraphs.append(catch)
    return Section(
        title="Accuracy by reference condition",
        paragraphs=tuple(paragraphs),
        tables=(("Accuracy by reference condition", table),),
        figures=(("Accuracy by reference condition",
                  accuracy_plot(table, "references", "references shown", chance)),),
    )
