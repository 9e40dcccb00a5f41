"""The 2AFC report's section: accuracy by reference condition (natural, synthetic, both,
none, accentuated ...), the comparison of Borowski et al. (2021) and Zimmermann et al. (2021).

It groups main trials by the ``references`` column (what each trial showed), so it needs no
study file; it says how these groups relate to the study's conditions, which the report's
GLMM compares, and which conditions had no catch trials to exclude anyone by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from experiments.paradigms.base import Section

if TYPE_CHECKING:
    import pandas as pd

N_BOOT = 2000  # participant-bootstrap resamples (seed 0: the section is reproducible)
NO_REFERENCES = "none"  # the `references` of a trial that showed none


def participant_interval(accuracy: np.ndarray, rng: np.random.Generator,
                         n_boot: int = N_BOOT) -> tuple[float, float]:
    """95 % percentile interval of the mean of participants' accuracies (nan for fewer than
    two participants). The same interval as ``analysis.summaries.bootstrap_mean_ci``, which
    a paradigm cannot import (analysis comes after experiments)."""
    if len(accuracy) < 2:
        return float("nan"), float("nan")
    means = accuracy[rng.integers(len(accuracy), size=(n_boot, len(accuracy)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def _order(levels: list[str]) -> list[str]:
    """Reference conditions sorted, ``none`` (the baseline) last."""
    return sorted(levels, key=lambda v: (v == NO_REFERENCES, v))


def accuracy_by_references(main: pd.DataFrame) -> pd.DataFrame:
    """One row per ``references`` value of the main trials: the conditions that showed it,
    participants, trials, pooled accuracy, and the mean of participants' accuracies with
    its participant-bootstrap interval."""
    import pandas as pd  # the report's library: the participant server never imports it

    rng = np.random.default_rng(0)
    refs = main["references"].astype(str)
    rows = []
    for level in _order(sorted(set(refs))):
        cell = main[refs == level]
        per_p = cell.groupby(cell["participant"].astype(str))["correct"].mean().to_numpy()
        lo, hi = participant_interval(per_p.astype(float), rng)
        conditions = sorted(set(cell["condition"].astype(str)))
        rows.append((level, ", ".join(conditions), len(per_p), len(cell),
                     float(cell["correct"].mean()), float(per_p.mean()), lo, hi))
    return pd.DataFrame(rows, columns=["references", "conditions", "participants", "trials",
                                       "accuracy", "participant_mean", "lower", "upper"])


def _plot(table: pd.DataFrame, chance: float):
    from matplotlib.figure import Figure  # drawn for the report only

    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.subplots()
    x = np.arange(len(table))
    mean = table["participant_mean"].to_numpy()
    err = np.vstack([mean - table["lower"].to_numpy(), table["upper"].to_numpy() - mean])
    ax.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", color="#1f6fb2", capsize=4,
                label="mean of participants, 95 % CI")
    ax.axhline(chance, color="#888", ls="--", lw=1, label="chance")
    ax.set_xticks(x, table["references"].tolist(), rotation=20 if len(x) > 4 else 0)
    ax.set_xlabel("references shown")
    ax.set_ylabel("proportion correct")
    ax.set_ylim(min(0.0, float(np.nanmin(table["lower"].fillna(1))) - 0.05), 1.02)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return fig


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
        figures=(("Accuracy by reference condition", _plot(table, chance)),),
    )
