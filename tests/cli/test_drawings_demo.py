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
from stimuli.registry import METHODS
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


@pytest.mark.slow
@pytest.mark.skipif("drawings" not in METHODS, reason="the drawings method has not landed")
@pytest.mark.skipif(not (DEMOS / "builds" / "drawings.toml").is_file(),
                    reason="the drawing demo's build file has not landed")
def test_the_drawings_demo_runs_headless_and_compares_drawers(tmp_path):
    workdir = tmp_path / "demo"
    result = run_demo(workdir, "--study", "drawings", "--simulate", "8")
    assert "simulated 8 participants" in result.stdout
    entries = load_stimulus_set(workdir / "stimuli").manifest.entries
    drawers = {d for e in entries for d in e.explanations.get("drawings", {})}
    html = (workdir / "drawings-report" / "report.html").read_text()
    check_export_and_report(workdir / "drawings-trials.csv", html, drawers)

