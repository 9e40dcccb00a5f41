"""The one-shot drawing demo (`assay demo --study drawings`): simulated participants
recognize drawings by every drawer, the export names each trial's drawer and the report
compares the drawers.

The demo itself builds its stimuli with the ``drawings`` method from
experiments/demos/builds/drawings.toml (trained models: slow, and skipped until both have
landed); the same study on the hand-built drawing set of the tests runs through the same
server, simulation, export and report here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from assay.cli import DEMOS
from experiments.study import load_study
from server.app import create_app
from server.catalog import launch_study
from server.devserver import serving
from server.export import trial_rows, write_export
from server.extensions import get_db
from server.simulate import simulate
from stimuli.stimulus_set import load_stimulus_set
from tests.cli.test_cli import run, run_demo
from tests.conftest import app_config, fresh_database
from tests.experiments.drawing_set import DRAWERS, build_drawing_set

SECTION = "Category recognition by drawer"
MODEL = "correct ~ drawer + (1|participant) + (1|unit_id)"


def check_export_and_report(export: Path, html: str, drawers: set[str]) -> None:
    frame = pd.read_csv(export, keep_default_na=False)
    main = frame[frame["trial_kind"] == "main"]
    assert set(main["drawer"]) == drawers and len(drawers) > 1
    assert set(frame.loc[frame["trial_kind"] == "catch", "drawer"]) <= {"exemplar"}
    assert {"choice", "target_position", "n_choices"} <= set(frame.columns)
    assert (main.groupby("participant").size() == 14).all()
    assert SECTION in html and MODEL in html


def test_the_drawings_study_on_a_hand_built_set_exports_and_reports_drawers(tmp_path):
    build_drawing_set(tmp_path / "stimuli")
    study_file = tmp_path / "drawings.toml"
    shutil.copyfile(DEMOS / "drawings.toml", study_file)
    spec = load_study(study_file)
    url = next(fresh_database("sqlite", tmp_path))
    app = create_app(app_config(url, tmp_path))
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, spec, study_file)
    with serving(app, port=0) as base:
        results = simulate(base, spec.slug, 8, workers=4)
    assert len(results) == 8
    with app.app_context():
        frame = trial_rows(get_db(), spec.slug)
    app.extensions["assay.engine"].dispose()
    export = tmp_path / "drawings-trials.csv"
    write_export(frame, export)
    out = tmp_path / "report"
    report = run("report", spec.slug, "--data", export, "--study-file", study_file,
                 "--out", out)
    assert report.exit_code == 0, report.output
    check_export_and_report(export, (out / "report.html").read_text(), set(DRAWERS))


def small_build(folder: Path) -> Path:
    """The demo's own build file, made quick: 16 px drawings of five alphabets, four drawers
    per font, a dozen categories, one short epoch of every model and a few critic steps, in
    a cache of its own (the real one trains for minutes)."""
    text = (DEMOS / "builds" / "drawings.toml").read_text()
    for old, new in (('device = "cpu"', 'device = "cpu"\ncache_dir = "cache"'),
                     ("size = 48", "size = 16\nalphabets = [\"greek\", \"cyrillic\", "
                                    "\"markers\", \"astrology\", \"katakana\"]"),
                     ("variants = 10", "variants = 4"),
                     ("categories = 24", "categories = 12"), ("per_category = 6",
                                                              "per_category = 3"),
                     ("ways = 20", "ways = 5"), ("epochs = 5", "epochs = 1"),
                     ("epochs = 16", "epochs = 1\nsteps_per_epoch = 10")):
        assert old in text, old
        text = text.replace(old, new)
    text += "\n[drawings.originality]\nsteps = 10\n\n[drawings.recognizability]\nsteps = 10\n"
    folder.mkdir(parents=True)
    (folder / "drawings.toml").write_text(text)
    return folder / "drawings.toml"


@pytest.mark.slow
def test_the_drawings_demo_runs_headless_and_compares_drawers(tmp_path):
    workdir = tmp_path / "demo"
    result = run_demo(workdir, "--study", "drawings", "--simulate", "8",
                      "--build-config", str(small_build(tmp_path / "build")))
    assert "simulated 8 participants" in result.stdout
    manifest = load_stimulus_set(workdir / "stimuli").manifest
    drawers = {d for e in manifest.entries for d in e.explanations.get("drawings", {})}
    assert drawers == {"human", "kl", "vq", "classification", "prototype", "simclr", "barlow"}
    assert set(manifest.provenance["critics"]) == drawers
    html = (workdir / "drawings-report" / "report.html").read_text()
    check_export_and_report(workdir / "drawings-trials.csv", html, drawers)
