"""The reference-type demo (`assay demo --study references`): its own stimulus build, with
feature visualizations and accentuations beside the natural exemplars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from assay.cli import DEMO_BUILD, DEMOS, demo_build, demo_studies
from stimuli.registry import METHODS
from tests.cli.test_cli import run, run_demo

LABELS = {"natural": "exemplars", "synthetic": "maco", "both": "exemplars+maco",
          "none": "none", "accentuated": "accentuation"}


def test_a_demo_study_builds_from_its_own_configuration_when_it_has_one():
    assert demo_build("references") == DEMOS / "builds" / "references.toml"
    assert demo_build("2afc") == demo_build("intruder") == DEMO_BUILD
    assert "references" in demo_studies()
    assert not any(Path(p).parent.name == "builds" for p in demo_studies().values())


def test_the_reference_demo_needs_its_methods_in_the_stimulus_set(tmp_path):
    result = run("demo", "--study", "references", "--stimuli", "procedural", "--no-serve",
                 "--workdir", tmp_path / "demo")
    assert result.exit_code == 2
    assert "condition 'synthetic': role 'max_refs' asks for method 'maco', which the " \
           "stimulus set does not have (it has exemplars)" in result.output


@pytest.mark.slow
@pytest.mark.skipif("maco" not in METHODS or "accentuation" not in METHODS,
                    reason="the maco and accentuation methods are not registered yet "
                           "(stimuli/registry.py)")
def test_reference_demo_exports_the_reference_condition_of_every_trial(tmp_path):
    workdir = tmp_path / "demo"
    result = run_demo(workdir, "--study", "references", "--simulate", "8")
    assert "simulated 8 participants" in result.stdout
    assert "experiments/demos/builds/references.toml" in result.stdout
    frame = pd.read_csv(workdir / "references-trials.csv", keep_default_na=False)
    assert set(frame["references"]) == set(LABELS.values())
    shown = frame.groupby("condition")["references"].agg(set).to_dict()
    assert shown == {c: {label} for c, label in LABELS.items() if c in shown}
    kinds = frame.groupby("condition")["trial_kind"].agg(set).to_dict()
    assert "catch" not in kinds["none"] and "catch" in kinds["natural"]
    main = frame[frame["trial_kind"] == "main"]
    assert (main.groupby("participant").size() == 10).all()
    html = (workdir / "references-report" / "report.html").read_text()
    assert "Accuracy by reference condition" in html
    assert "Condition(s) none had no catch trials" in html
