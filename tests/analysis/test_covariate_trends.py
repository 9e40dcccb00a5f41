"""Per-unit accuracy against the units' covariates, and the report's figure and table of it;
the exclusion funnel in the report."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis.covariates import covariate_trends
from analysis.exclusions import apply_exclusions
from analysis.report import write_report
from tests.analysis.test_report import study_trials

IMG = re.compile(r'<img src="([^"]*)"')
RULES = {"catch_min_accuracy": 0.5}


def test_a_known_line_and_the_cases_without_a_correlation():
    z = [-1.5, -0.5, 0.5, 1.5, np.nan]  # u4 has no value: left out
    trials = pd.DataFrame({"unit_id": [f"u{i}" for i in range(5)], "importance_z": z})
    per_unit = pd.DataFrame({
        "condition": ["a"] * 5 + ["b"] * 5 + ["c"] * 2,
        "unit_id": [f"u{i}" for i in range(5)] * 2 + ["u0", "u1"],
        "accuracy": [0.6 + 0.1 * v for v in z[:4]] + [0.3] + [0.7] * 5 + [0.2, 0.9],
    })
    trends = covariate_trends(per_unit, trials, ["importance"]).set_index("condition")
    assert trends["n_units"].to_dict() == {"a": 4, "b": 4, "c": 2}
    a = trends.loc["a"]
    assert (a["r"], a["slope"], a["intercept"]) == pytest.approx((1.0, 0.1, 0.6))
    assert a["p"] < 1e-6
    # b: every unit as accurate (no spread); c: two units only
    assert trends.loc[["b", "c"], ["r", "p", "slope", "intercept"]].isna().all().all()
    with pytest.raises(ValueError, match="^no standardized covariate column 'size_z'$"):
        covariate_trends(per_unit, trials, ["size"])


def covariate_trials() -> pd.DataFrame:
    """The report's study, with accuracy rising over the units and a second numeric
    covariate; a text column named like a covariate is not one."""
    trials = study_trials()
    unit = trials["unit_id"].astype(str).str[1:].astype(int).to_numpy()
    main = (trials["trial_kind"] == "main").to_numpy()
    rng = np.random.default_rng(3)
    trials.loc[main, "correct"] = rng.random(main.sum()) < 0.45 + 0.08 * unit[main]
    return trials.assign(cov_size=(unit ** 2).astype(float), cov_label="x")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("covariates")
    return write_report(covariate_trials(), RULES, out, models=[], n_boot=50)


def test_the_report_correlates_each_units_accuracy_with_each_covariate(report):
    out = report.parent
    trends = pd.read_csv(out / "covariate_trends.csv")
    assert set(trends["covariate"]) == {"importance", "size"}
    flagged = pd.read_csv(out / "trials_flagged.csv")
    main = flagged[(flagged["trial_kind"] == "main") & ~flagged["excluded"]]
    for name in ("importance", "size"):
        for condition, rows in main.groupby("condition"):
            units = rows.groupby("unit_id").agg(accuracy=("correct", "mean"),
                                                value=(f"{name}_z", "first"))
            row = trends[(trends["covariate"] == name) & (trends["condition"] == condition)]
            assert row["n_units"].item() == len(units) == 6
            r = np.corrcoef(units["value"], units["accuracy"])[0, 1]
            slope, intercept = np.polyfit(units["value"], units["accuracy"], 1)
            assert row["r"].item() == pytest.approx(r, abs=1e-12)
            assert (row["slope"].item(), row["intercept"].item()) == pytest.approx(
                (slope, intercept), abs=1e-12)
    assert (trends["r"] > 0.5).all()  # accuracy was made to rise over the units


def test_the_report_shows_the_covariate_figure_and_table(report):
    html = report.read_text()
    assert len(IMG.findall(html)) == 7  # funnel, accuracy, participants, units, RT,
    # confidence and the covariates (no models asked for: no forest plot)
    # two covariates: two panels, the figure's full width
    assert re.search(r'<figure class="wide">\s*<img src="data:image/png;base64,[^"]+" '
                     r'alt="Units against covariates">', html)
    assert "Unit accuracy against covariates" in html  # the table's heading


def test_without_covariates_the_figure_and_table_are_left_out(tmp_path):
    trials = study_trials().drop(columns="cov_importance")
    html = write_report(trials, RULES, tmp_path, models=[], n_boot=50).read_text()
    assert len(IMG.findall(html)) == 6
    assert "Units against covariates" not in html
    assert "Unit accuracy against covariates" not in html
    assert not (tmp_path / "covariate_trends.csv").exists()


def test_the_report_shows_the_exclusion_funnel(report):
    html = report.read_text()
    assert 'alt="Exclusion funnel"' in html
    funnel = pd.read_csv(report.parent / "exclusion_funnel.csv")
    expected = apply_exclusions(covariate_trials(), RULES).funnel
    pd.testing.assert_frame_equal(funnel, expected)
    # 12 sessions of 26 trials; one abandoned, one failing the catch trials
    assert funnel["participants"].tolist()[:3] == [12, 11, 10]
    assert funnel["trials"].tolist()[:3] == [312, 286, 260]
    for step, n, trials in funnel[["step", "participants", "trials"]].itertuples(index=False):
        assert f"<td>{step}</td><td>{n}</td><td>{trials}</td>" in html
