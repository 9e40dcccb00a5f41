"""The utility benchmark's report section: accuracy of predicting the model by explanation
method and session, each method's utility score against the no-explanation baseline, and
the methods' faithfulness beside it.

Utility (Colin et al. 2022) = the method's accuracy / the baseline's accuracy, each the mean
of its participants' evaluation accuracies (conditions are between participants); the 95 %
interval resamples participants within each of the two groups. The GLMM of
``correct ~ explanation * session`` with participants and images (unit_id) crossed is
fitted by the report itself, from the paradigm's ``factor`` and ``factor_by``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from experiments.paradigms.accuracy_by import N_BOOT, accuracy_by, accuracy_plot
from experiments.paradigms.base import Section

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

BASELINE = "none"
FAITHFULNESS = ("deletion", "insertion", "mufidelity")


def participant_accuracy(main: pd.DataFrame) -> pd.DataFrame:
    """One row per participant: explanation, accuracy on evaluation trials."""
    g = main.groupby(main["participant"].astype(str))
    return g.agg(explanation=("explanation", "first"), accuracy=("correct", "mean"))


def utility_scores(main: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per method: its accuracy, the baseline's, the ratio and its 95 % two-group
    participant-bootstrap interval, and the mean faithfulness of its maps."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_p = participant_accuracy(main)
    base = per_p.loc[per_p["explanation"] == BASELINE, "accuracy"].to_numpy(float)
    rows = []
    for method in sorted(set(per_p["explanation"]) - {BASELINE}):
        acc = per_p.loc[per_p["explanation"] == method, "accuracy"].to_numpy(float)
        row = {"explanation": method, "participants": len(acc), "accuracy": acc.mean(),
               "baseline_participants": len(base),
               "baseline_accuracy": base.mean() if len(base) else np.nan}
        row["utility"] = row["accuracy"] / row["baseline_accuracy"] \
            if len(base) and base.mean() > 0 else np.nan
        lo = hi = np.nan
        if len(acc) >= 2 and len(base) >= 2:
            m = acc[rng.integers(len(acc), size=(n_boot, len(acc)))].mean(axis=1)
            b = base[rng.integers(len(base), size=(n_boot, len(base)))].mean(axis=1)
            ratio = m[b > 0] / b[b > 0]
            lo, hi = np.quantile(ratio, [0.025, 0.975])
        row |= {"lower": lo, "upper": hi}
        shown = main[main["explanation"].astype(str) == method]
        for name in FAITHFULNESS:
            if name in shown:
                row[name] = pd.to_numeric(shown[name], errors="coerce").mean()
        rows.append(row)
    return pd.DataFrame(rows)


def session_plot(main: pd.DataFrame, methods: list[str], chance: float) -> Figure:
    """Mean of participants' accuracy per session, one line per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.4))
    ax = fig.subplots()
    for method in methods:
        rows = main[main["explanation"].astype(str) == method]
        per = rows.groupby([rows["session"].astype(int), rows["participant"].astype(str)])[
            "correct"].mean().groupby(level=0).mean()
        ax.plot(per.index, per.to_numpy(), "o-", label=method,
                lw=2.5 if method == BASELINE else 1.5,
                color="#555" if method == BASELINE else None)
    ax.axhline(chance, color="#888", ls="--", lw=1)
    ax.set_xlabel("session")
    ax.set_ylabel("proportion correct")
    ax.set_xticks(sorted(main["session"].astype(int).unique()))
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, fontsize=8, ncol=2, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def utility_section(trials: pd.DataFrame) -> Section | None:
    """The section from the report's flagged trials of the utility paradigm; None without
    evaluation trials."""
    if "explanation" not in trials:
        return None
    main = trials[(trials["trial_kind"].astype(str) == "main") & ~trials["excluded"]]
    main = main[main["explanation"].notna()]
    if main.empty:
        return None
    chance = float(main["chance"].mean()) if "chance" in main else 0.5
    methods = sorted(set(main["explanation"].astype(str)), key=lambda m: (m != BASELINE, m))
    by_method = accuracy_by(main, "explanation", methods, units="images")
    paragraphs = [
        "Evaluation trials of included participants (predict the model's decision, no "
        "explanation shown), by the explanation their learning phase showed. Intervals: 95 % "
        f"participant-bootstrap ({N_BOOT} resamples, seed 0); dashed: chance ({chance:.3g}).",
        "The report's model 'Accuracy by explanation x session' compares the methods and "
        "their learning across sessions, with participants and images (unit_id) as crossed "
        "random intercepts; its reference level is the baseline ('none').",
    ]
    tables = [("Accuracy by explanation", by_method)]
    if BASELINE in methods and len(methods) > 1:
        scores = utility_scores(main)
        paragraphs.append(
            "Utility (Colin et al. 2022): the method's accuracy divided by the baseline's; "
            "above 1, the explanations helped people predict the model. The interval "
            "resamples participants within the method's and the baseline's groups. "
            "Faithfulness columns: the mean over the images these participants were tested "
            "on of the method's deletion (lower is better), insertion and MuFidelity "
            "(higher is better), to set against utility.")
        tables.insert(0, ("Utility scores", scores))
    else:
        paragraphs.append("No utility scores: the study has no baseline condition "
                          "(method 'none') or no method beside it.")
    figures = [("Accuracy by explanation", accuracy_plot(by_method, "explanation",
                                                         "explanation", chance))]
    if "session" in main and main["session"].nunique() > 1:
        figures.append(("Accuracy by session", session_plot(main, methods, chance)))
    return Section(title="Utility: predicting the model", paragraphs=tuple(paragraphs),
                   tables=tuple(tables), figures=tuple(figures))
