"""Borowski et al. (ICLR 2021), Experiment I: the mapping, the paper's accuracies, the GLMM."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis.borowski import PAPER_ACCURACY, data_path, load_borowski, paper_accuracy
from analysis.summaries import accuracy_table
from tests.analysis.conftest import shared_dir


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    path = data_path(shared_dir())
    if not path.exists():
        pytest.skip(f"Borowski et al. data not found at {path} (set ASSAY_SHARED)")
    return load_borowski(path)


def test_mapping_to_tidy_columns(trials):
    assert trials["participant"].nunique() == 10
    assert trials.groupby("participant", observed=True).size().eq(186).all()
    kinds = trials["trial_kind"].value_counts()
    assert kinds.to_dict() == {"main": 1350, "repeated": 180, "catch": 180, "practice": 150}
    main = trials[trials["trial_kind"] == "main"]
    assert main["unit_id"].nunique() == 45  # 9 layers x (4 branches + 1 hand-picked)
    assert main["source"].value_counts()[["sampled", "hand-picked"]].tolist() == [1080, 270]
    assert main["layer"].cat.categories.tolist()[:3] == ["3a", "3b", "4a"]
    assert main["layer"].notna().all()
    assert set(trials.loc[trials["trial_kind"] == "catch", "source"]) == {"auxiliary"}
    # The published file has one negative RT (-68.7 ms, S05, none_post): kept as it is; the
    # log-RT models leave out non-positive times.
    assert (trials["rt_ms"] <= 0).sum() == 1
    assert trials["confidence"].between(1, 3).all()
    assert trials["trial_index"].is_unique is False  # per participant only
    assert not trials.duplicated(["participant", "trial_index"]).any()


def test_reproduces_the_papers_accuracies(trials):
    """Natural 92.2 %, synthetic 82.0 %: the mean over participants of main, non-catch
    trials (the repeated trials at the end and the no-reference blocks left out)."""
    acc = paper_accuracy(trials)
    for condition, expected in PAPER_ACCURACY.items():
        assert round(100 * acc[condition], 1) == pytest.approx(100 * expected, abs=1e-9)
    # Exactly 415/450 and 369/450: every participant had 45 such trials per condition.
    assert acc["natural"] == pytest.approx(415 / 450, abs=1e-12)
    assert acc["synthetic"] == pytest.approx(369 / 450, abs=1e-12)
    # The paper's ± (92 ± 2 %, 82 ± 4 %) is 1.96 standard errors over participants.
    main = trials[trials["trial_kind"] == "main"]
    per = main.groupby(["condition", "participant"], observed=True)["correct"].mean()
    half = 1.96 * per.groupby(level=0, observed=True).sem()
    assert round(100 * half["natural"]) == 2
    assert round(100 * half["synthetic"]) == 4
    # Including the repeated trials would not give the paper's numbers.
    both = trials[trials["trial_kind"].isin(["main", "repeated"])]
    assert both[both["condition"] == "natural"]["correct"].mean() != pytest.approx(0.922, abs=5e-4)


def test_accuracy_table_matches(trials):
    table = accuracy_table(trials, ["condition"], n_boot=200).set_index("condition")
    assert table.loc["natural", "participant_mean"] == pytest.approx(0.9222, abs=1e-4)
    assert table.loc["synthetic", "participant_lower"] < 0.82 < \
        table.loc["synthetic", "participant_upper"]


def test_glmm_of_reference_type_with_crossed_random_effects(trials):
    main = trials[(trials["trial_kind"] == "main")
                  & trials["condition"].isin(["natural", "synthetic"])].copy()
    for col in ("condition", "participant", "unit_id"):
        main[col] = main[col].cat.remove_unused_categories()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = analysis.glmm("correct ~ condition + (1|participant) + (1|unit_id)", main)
    assert fit.converged and not fit.singular
    assert fit.nobs == 900
    assert {re.group: re.nlevels for re in fit.random} == {"participant": 10, "unit_id": 45}
    effect = fit.to_frame().set_index("term").loc["conditionsynthetic"]
    # Synthetic references are worse: about -1 on the logit scale, clearly non-zero.
    assert -1.5 < effect["estimate"] < -0.6
    assert effect["p"] < 1e-4


def test_not_the_file(tmp_path: Path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: not the Borowski et al. Experiment I file "
                                         r"\(missing RT, catch_trial, correct, instr_type, "
                                         r"subject_id, trial_type\)$"):
        load_borowski(bad)
