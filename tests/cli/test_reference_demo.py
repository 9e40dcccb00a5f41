"""The reference-type demo (`assay demo --study references`): its own stimulus build, with
feature visualizations and accentuations beside the natural exemplars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from assay.cli import DEMO_BUILD, DEMOS, demo_build, demo_studies
from stimuli.stimulus_set import load_stimulus_set
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


def small_build(folder: Path) -> Path:
    """The demo's own build file, made quick: a CNN trained on 2000 procedural images in a
    cache of its own, 600 pool images, a few optimization steps."""
    text = demo_build("references").read_text()
    for old, new in (('data = "auto"', 'data = "procedural"\ntrain_samples = 2000'),
                     ('device = "cpu"', 'device = "cpu"\ncache_dir = "cache"'),
                     ("display_size = 112", "display_size = 56\nlimit = 600"),
                     ("steps = 64", "steps = 8"), ("steps = 48", "steps = 8"),
                     ("n_images = 256", "n_images = 32")):
        assert old in text, old
        text = text.replace(old, new)
    folder.mkdir(parents=True)
    (folder / "references.toml").write_text(text)
    return folder / "references.toml"


@pytest.mark.slow
def test_reference_demo_exports_the_reference_condition_of_every_trial(tmp_path):
    workdir = tmp_path / "demo"
    config = small_build(tmp_path / "build")
    result = run_demo(workdir, "--study", "references", "--simulate", "8",
                      "--build-config", str(config))
    assert "simulated 8 participants" in result.stdout
    manifest = load_stimulus_set(workdir / "stimuli").manifest
    for entry in manifest.entries:
        assert set(entry.explanations) == {"exemplars", "maco", "accentuation"}
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
