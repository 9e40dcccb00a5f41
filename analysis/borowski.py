"""Borowski, Zimmermann et al. (ICLR 2021), Experiment I, as a tidy Assay trial table.

The published CSV (``experiment_I_trials.csv``, described in its ``COLUMNS.md``) has one row
per trial of 10 participants. The mapping to the export's columns:

- ``participant``: ``S01`` .. ``S10`` from ``subject_id``.
- ``condition``: the reference type, ``instr_type`` renamed: ``natural``, ``synthetic``
  (the paper's feature visualizations, ``optimized`` in the file), ``none_pre`` and
  ``none_post`` (no references, before and after). Unlike an Assay study, where the
  condition is between subjects, every participant saw all four.
- ``trial_kind``: ``practice``; ``catch`` for main trials with ``catch_trial``; ``main``
  otherwise; and ``repeated`` for the trials shown a second time at the end (an extra
  category the Assay export does not have).
- ``unit_id``: GoogLeNet layer and branch, e.g. ``3a_1x1``, ``4b_pool`` (a randomly sampled
  feature map, ``source`` ``sampled``) or ``4b_pool_hand`` (the hand-picked one,
  ``channel_1``, ``source`` ``hand-picked``). The letter-named feature maps of practice
  and catch trials become ``aux_<letter>`` of kind ``auxiliary``.
- ``layer``: the Inception module (``3a`` .. ``5b``); missing for auxiliary units.
- ``choice``: ``response`` (``a`` or ``b``, the two query images); ``confidence``: the
  absolute rating 1-3; ``rt_ms``: ``RT`` in milliseconds; ``block``: ``block_nr``;
  ``trial_index``: ``trial_nr``.
- The file has one negative RT (-68.7 ms, S05, a none_post trial); it is kept as published
  and left out of log-RT models, which use positive times only.
- No timestamps were published (``presented_at`` and ``responded_at`` are missing), every
  practice trial was a first attempt, and all sessions are completed, live sessions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import tidy
from analysis.report import ModelSpec, write_report

FILE = "experiment_I_trials.csv"
LAYERS = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
BRANCHES = {"0": "1x1", "1": "3x3", "2": "5x5", "3": "pool"}
CONDITIONS = ["natural", "synthetic", "none_pre", "none_post"]
TRIAL_KINDS = ["practice", "main", "catch", "repeated"]
# The paper's Figure 3A: mean over participants of main, non-catch trials.
PAPER_ACCURACY = {"natural": 0.922, "synthetic": 0.820}


def shared_dir() -> Path:
    """The shared reference folder: ASSAY_SHARED, else ``../shared`` beside the repository."""
    env = os.environ.get("ASSAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def data_path(shared: Path | None = None) -> Path:
    return (shared or shared_dir()) / "data" / "borowski2021" / FILE


def _unit(raw: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    layer_code = raw["layer"].str.removeprefix("layer_")
    real = layer_code.str.fullmatch(r"\d")
    layer = layer_code.where(real).map(lambda c: LAYERS[int(c)] if isinstance(c, str) else c)
    branch = raw["kernel_size"].astype(str).map(BRANCHES)
    hand = raw["channel"] == "channel_1"
    unit = layer + "_" + branch + np.where(hand, "_hand", "")
    unit = unit.where(real, "aux_" + layer_code)
    kind = pd.Series(np.where(~real, "auxiliary", np.where(hand, "hand-picked", "sampled")),
                     index=raw.index)
    return unit, kind, layer


def load_borowski(path: Path | None = None) -> pd.DataFrame:
    """Experiment I as a typed trial table (see the module docstring for the mapping)."""
    path = Path(path) if path is not None else data_path()
    raw = pd.read_csv(path)
    missing = {"subject_id", "instr_type", "trial_type", "catch_trial", "correct", "RT"} - \
        set(raw.columns)
    if missing:
        raise ValueError(f"{path}: not the Borowski et al. Experiment I file "
                         f"(missing {', '.join(sorted(missing))})")
    unit, source, layer = _unit(raw)
    kind = np.where(raw["trial_type"] == "practice", "practice",
                    np.where(raw["trial_type"] == "repeated", "repeated",
                             np.where(raw["catch_trial"], "catch", "main")))
    condition = raw["instr_type"].replace({"optimized": "synthetic"})
    frame = pd.DataFrame({
        "study": "borowski2021-exp1",
        "study_version": 1,
        "participant": raw["subject_id"].map(lambda i: f"S{i:02d}"),
        "mode": "live",
        "condition": condition,
        "cell": condition,
        "status": "completed",
        "block": raw["block_nr"],
        "trial_index": raw["trial_nr"],
        "attempt": 1,
        "trial_kind": kind,
        "unit_id": unit,
        "paradigm": "2afc_exemplar",
        "source": source,
        "layer": layer,
        "choice": raw["response"],
        "confidence": raw["abs_conf_rating"],
        "correct": raw["correct"],
        "rt_ms": raw["RT"] * 1000.0,
        "presented_at": pd.NaT,
        "responded_at": pd.NaT,
        "n_events": pd.NA,
    })
    frame = frame.sort_values(["participant", "trial_index"], kind="stable")
    out = tidy(frame)
    out["condition"] = out["condition"].cat.set_categories(CONDITIONS)
    out["trial_kind"] = out["trial_kind"].cat.set_categories(TRIAL_KINDS)
    out["layer"] = out["layer"].cat.set_categories(LAYERS)
    return out


def paper_accuracy(trials: pd.DataFrame) -> pd.Series:
    """Mean over participants of the accuracy on main, non-catch trials, per condition."""
    main = trials[trials["trial_kind"] == "main"]
    per = main.groupby(["condition", "participant"], observed=True)["correct"].mean()
    return per.groupby(level="condition", observed=True).mean()


# Illustrative rules (the paper excluded nobody from Experiment I); timestamps, instructions
# time and practice repeats were not published, so the report lists those rules as unset.
RULES = {"catch_min_accuracy": 0.8, "max_same_response_fraction": 0.9}
REFERENCES = ("natural", "synthetic")


def write_borowski_report(out_dir: str | Path, path: Path | None = None, n_boot: int = 2000,
                          seed: int = 0) -> Path:
    """The Assay report of Experiment I, with the GLMM of correct ~ reference type and
    crossed random intercepts for participants and units (natural vs synthetic trials)."""
    random = "(1|participant) + (1|unit_id)"
    models = [
        ModelSpec("Accuracy by reference type (binomial GLMM, logit link)",
                  f"correct ~ condition + {random}", subset={"condition": REFERENCES}),
        ModelSpec("Accuracy, all four conditions (binomial GLMM, logit link)",
                  f"correct ~ condition + {random}"),
        ModelSpec("Response time by reference type (LMM on log RT, REML)",
                  f"log(rt_ms) ~ condition + {random}", family="gaussian",
                  subset={"condition": REFERENCES}),
    ]
    trials = load_borowski(path)
    acc = paper_accuracy(trials)
    notes = [
        "Borowski, Zimmermann et al. (ICLR 2021), Experiment I: 10 participants, 2AFC with "
        "9 maximally and 9 minimally activating reference images per GoogLeNet feature map. "
        "The condition is the reference type (natural images, synthetic feature "
        "visualizations, or none before/after), varied within participants.",
        f"Paper: natural 92.2 %, synthetic 82.0 % (mean over participants of main, non-catch "
        f"trials). Reproduced here: natural {100 * acc['natural']:.1f} %, synthetic "
        f"{100 * acc['synthetic']:.1f} %.",
        "Exclusion rules are illustrative (catch accuracy at least 0.8, at most 90 % of "
        "responses on one side); the paper excluded nobody. Utility uses the no-reference "
        "trials (none_pre + none_post) as baseline.",
    ]
    return write_report(trials, RULES, out_dir, title="Borowski et al. (2021), Experiment I",
                        models=models, baseline=["none_pre", "none_post"], n_boot=n_boot,
                        seed=seed, source=f"{data_path().name if path is None else path.name}",
                        notes=notes)
