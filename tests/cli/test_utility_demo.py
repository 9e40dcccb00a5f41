"""The utility demo (`assay demo --study utility`): a CNN trained on a shortcut dataset,
its decisions explained by three attribution methods; simulated participants learn from
the images, decisions and maps (never the answer key), predict the model, and the report
scores each method's utility against the no-explanation baseline, with the GLMM of
explanation x session."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from assay.cli import DEMOS
from stimuli.stimulus_set import load_stimulus_set
from tests.cli.test_cli import run_demo

GLMM = "correct ~ explanation * session + (1|participant) + (1|unit_id)"


def small_build(folder: Path) -> Path:
    """The demo's own build file, made quick: fewer training images and epochs (the model
    still follows the colour), shorter faithfulness curves, in a cache of its own."""
    text = (DEMOS / "builds" / "utility.toml").read_text()
    for old, new in (('device = "cpu"', 'device = "cpu"\ncache_dir = "cache"'),
                     ("train_samples = 2000", "train_samples = 800\ntest_samples = 128"),
                     ("epochs = 4", "epochs = 3"),
                     ("display_size = 192", "display_size = 96")):
        assert old in text, old
        text = text.replace(old, new)
    text += "held_out = 16\n\n[faithfulness]\nsteps = 8\nsubsets = 16\n"
    folder.mkdir(parents=True)
    (folder / "utility.toml").write_text(text)
    return folder / "utility.toml"


@pytest.mark.slow
def test_the_utility_demo_scores_methods_against_the_baseline(tmp_path):
    workdir = tmp_path / "demo"
    result = run_demo(workdir, "--study", "utility", "--simulate", "12",
                      "--build-config", str(small_build(tmp_path / "build")))
    assert "simulated 12 participants: 12 completed" in result.stdout
    provenance = load_stimulus_set(workdir / "stimuli").manifest.provenance
    assert provenance["model"]["shortcut_bias"] > 0.8  # a biased model, as the scenario needs
    assert provenance["decisions"]["follows_shortcut"] > 0.8
    assert provenance["method_details"]["lowpass"]["cutoff"] in (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
    frame = pd.read_csv(workdir / "utility-trials.csv", keep_default_na=False)
    assert frame["participant"].nunique() == 12
    assert set(frame["condition"]) == {"baseline", "saliency", "gradcam", "lowpass"}
    report = workdir / "utility-report"
    html = (report / "report.html").read_text()
    assert "Utility scores" in html and GLMM in html
    models = pd.read_csv(report / "models.csv")
    assert GLMM in set(models["formula"])
    scores = pd.read_csv(report / "utility_scores.csv").set_index("explanation")
    assert set(scores.index) == {"saliency", "gradcam", "lowpass"}
    assert ((scores["lower"] <= scores["utility"]) & (scores["utility"] <= scores["upper"])).all()
    assert json.loads(json.dumps(provenance["faithfulness"])).keys() == {
        "saliency", "gradcam", "lowpass"}
