"""Pre-registration: a study's ``[analysis]`` (the confirmatory GLMM, its tested term,
alpha, direction) is frozen with the launched version; the report gives it first, calls
everything else exploratory, and says where it had to deviate."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from analysis.covariates import standardize_covariates
from analysis.exclusions import apply_exclusions
from analysis.report import confirmatory, report_command
from experiments.study import AnalysisPlan, load_study
from tests.analysis.test_report import DEMO, study_trials


def spec_with(**plan):
    spec = load_study(DEMO)
    return spec.model_copy(update={"analysis": AnalysisPlan(**plan)})


def test_the_report_separates_confirmatory_from_exploratory(tmp_path):
    spec = spec_with(term="conditionneurons", alternative="greater", alpha=0.05)
    html = report_command("demo-2afc", study_trials(), spec=spec, out_dir=tmp_path,
                          n_boot=50).read_text()
    assert "Confirmatory analysis (pre-registered)" in html
    assert "Exploratory models" in html and "Everything below is exploratory" in html
    assert html.index("Confirmatory analysis") < html.index("Exploratory models")
    assert re.search(r"p = [0-9.e-]+:\s*<b>(not )?significant</b>", html)
    assert "Deviation" not in html


def test_one_sided_p_is_half_the_two_sided_one_in_the_stated_direction():
    trials = standardize_covariates(apply_exclusions(study_trials(), None).trials)
    two = confirmatory(trials, AnalysisPlan(term="conditionneurons"))
    greater = confirmatory(trials, AnalysisPlan(term="conditionneurons", alternative="greater"))
    less = confirmatory(trials, AnalysisPlan(term="conditionneurons", alternative="less"))
    assert greater["z"] == two["z"]
    one, other = sorted([greater["p"], less["p"]])
    assert one == pytest.approx(two["p"] / 2) and one + other == pytest.approx(1)


def test_a_deviation_is_reported(tmp_path):
    spec = spec_with(term="conditionmaco")
    html = report_command("demo-2afc", study_trials(), spec=spec, out_dir=tmp_path,
                          n_boot=50).read_text()
    assert "Deviation from the pre-registered analysis: the model has no term" in html


def test_the_plan_is_validated_and_frozen_in_the_version_digest():
    with pytest.raises(ValidationError, match="alternative"):
        AnalysisPlan(term="x", alternative="sideways")
    plain = load_study(DEMO)
    planned = spec_with(term="conditionneurons")
    assert plain.digest() != planned.digest()
    assert '"analysis"' not in plain.canonical_json()  # older specs keep their digest
