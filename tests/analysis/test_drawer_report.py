"""The drawing paradigms in the report: accuracy by drawer with participant-bootstrap
intervals (the paradigm's section), and the GLMM the report fits from the paradigm's
``factor``: ``correct ~ drawer + (1|participant) + (1|unit_id)``, human drawings as the
reference level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.exclusions import apply_exclusions
from analysis.load import tidy
from analysis.report import default_models, fit_model, write_report
from experiments.paradigms.drawings_report import accuracy_by_drawer
from tests.analysis.test_exclusions import make_trials

ACCURACY = {"human": 0.9, "kl": 0.45, "vq": 0.7}


def drawing_trials(seed: int = 0) -> pd.DataFrame:
    """Sixteen participants of one condition, every drawer mixed within participants, eight
    categories; recognition accuracy differs by drawer."""
    rng = np.random.default_rng(seed)
    people = {f"P{i:02d}": {"condition": "all-drawers"} for i in range(16)}
    trials = make_trials(people, n_main=48, n_catch=3, n_units=8)
    main = trials["trial_kind"] == "main"
    drawers = np.array(list(ACCURACY))[trials["trial_index"].to_numpy() % 3]
    p = np.vectorize(ACCURACY.get)(drawers)
    trials = trials.assign(
        paradigm="category_recognition", study="demo-drawings", chance=0.25, layer="",
        unit_id="cat/" + trials["unit_id"].astype(str), source="hershey",
        drawer=np.where(main, drawers, np.where(trials["trial_kind"] == "catch", "exemplar",
                                                drawers)),
        correct=np.where(main, rng.uniform(size=len(trials)) < p, trials["correct"]),
        choice=1 + trials["trial_index"] % 4)
    return tidy(trials.drop(columns=["confidence"]))


@pytest.fixture(scope="module")
def flagged() -> pd.DataFrame:
    return apply_exclusions(drawing_trials(), None).trials


def test_the_report_asks_for_a_drawer_glmm_with_human_as_reference(flagged):
    specs = {m.formula: m for m in default_models(flagged)}
    spec = specs["correct ~ drawer + (1|participant) + (1|unit_id)"]
    assert spec.subset == {"paradigm": ("category_recognition",)}
    assert spec.reference == {"drawer": "human"}
    fit = fit_model(flagged, spec)
    assert fit.error is None and fit.nobs == 16 * 48
    fixef = fit.result.to_frame().set_index(fit.result.to_frame().columns[0])
    assert list(fixef.index) == ["(Intercept)", "drawerkl", "drawervq"]
    estimate = fixef.columns[0]
    assert fixef.loc["drawerkl", estimate] < fixef.loc["drawervq", estimate] < 0


def test_no_drawer_model_for_one_drawer_or_other_paradigms(flagged):
    one = flagged[flagged["drawer"].astype(str).isin(["human", "exemplar"])]
    assert not any("drawer" in m.formula for m in default_models(one))
    two_afc = tidy(make_trials())
    assert not any("drawer" in m.formula for m in default_models(
        apply_exclusions(two_afc, None).trials))


def test_accuracy_by_drawer_table(flagged):
    main = flagged[flagged["trial_kind"] == "main"]
    table = accuracy_by_drawer(main).set_index("drawer")
    assert list(table.index) == ["human", "kl", "vq"]  # human first
    for drawer in ACCURACY:
        row = table.loc[drawer]
        per_p = main[main["drawer"] == drawer].groupby("participant", observed=True)[
            "correct"].mean()
        assert (row["participants"], row["categories"], row["trials"]) == (16, 8, 256)
        assert row["participant_mean"] == pytest.approx(per_p.mean())
        assert row["lower"] <= row["participant_mean"] <= row["upper"]
    assert table.loc["human", "accuracy"] > table.loc["kl", "accuracy"]


def test_the_report_shows_the_section_and_the_model(tmp_path):
    html = write_report(drawing_trials(), None, tmp_path, n_boot=200).read_text()
    assert "Category recognition by drawer" in html
    assert "correct ~ drawer + (1|participant) + (1|unit_id)" in html
    models = pd.read_csv(tmp_path / "models.csv")
    assert "Accuracy by drawer (binomial GLMM, logit link)" in set(models["model"])
