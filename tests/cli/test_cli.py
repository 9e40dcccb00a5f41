"""The `assay` command, run as a user would, on a real SQLite database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select

from analysis.schema import COLUMNS
from assay.cli import main
from experiments.paradigms import PARADIGMS
from server.devserver import serving
from server.export import trial_rows
from server.extensions import get_db
from server.migrate import alembic_config
from server.models import Image, Study, StudyVersion
from stimuli.registry import METHODS, MODELS, SOURCES
from stimuli.stimulus_set import load_stimulus_set
from tests.stimuli.test_build import SMALL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def study_file(tmp_path, stimulus_dir):
    shutil.copytree(stimulus_dir, tmp_path / "stimuli")
    path = tmp_path / "study.toml"
    shutil.copyfile(ROOT / "experiments" / "demos" / "2afc.toml", path)
    return path


def run(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result


def count(url, what):
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(select(func.count()).select_from(what))
    engine.dispose()
    return n


def test_launch_prints_the_url_and_versions_the_study(tmp_path, study_file):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    first = run(
        "study",
        "launch",
        study_file,
        "--database-url",
        url,
        "--base-url",
        "https://study.example.org",
    )
    assert first.exit_code == 0, first.output
    assert "created version 1" in first.output
    assert (
        "https://study.example.org/s/demo-2afc?PROLIFIC_PID={{%PROLIFIC_PID%}}"
        "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    ) in first.output
    again = run("study", "launch", study_file, "--database-url", url)
    assert "unchanged, still version 1" in again.output
    study_file.write_text(study_file.read_text().replace("main = 12", "main = 10"))
    assert "created version 2" in run("study", "launch", study_file, "--database-url", url).output
    assert count(url, StudyVersion) == 2


def test_broken_study_file_changes_nothing(tmp_path, study_file):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert run("study", "launch", study_file, "--database-url", url).exit_code == 0
    study_file.write_text(study_file.read_text().replace("main = 12", 'main = "many"'))
    result = run("study", "launch", study_file, "--database-url", url)
    assert result.exit_code == 2
    assert "trials.main: Input should be a valid integer" in result.output
    assert count(url, StudyVersion) == 1


def test_stimuli_import_is_idempotent_and_refuses_corrupt_sets(tmp_path, study_file):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    stimuli = study_file.parent / "stimuli"
    first = run("stimuli", "import", stimuli, "--database-url", url)
    assert first.exit_code == 0, first.output
    n_images = count(url, Image)
    assert n_images > 0
    assert run("stimuli", "import", stimuli, "--database-url", url).exit_code == 0
    assert count(url, Image) == n_images
    victim = next((stimuli / "images").iterdir())
    victim.write_bytes(b"not a png")
    bad = run("stimuli", "import", stimuli, "--database-url", url)
    assert bad.exit_code == 2 and "content does not match its name (corrupt image)" in bad.output


def run_demo(workdir: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "assay.cli", "demo", "--no-serve", "--workdir", str(workdir)]
    result = subprocess.run(
        [*command, *options], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return result


def test_demo_runs_headless_end_to_end_and_exports(tmp_path):
    workdir = tmp_path / "demo"
    result = run_demo(workdir, "--simulate", "6", "--stimuli", "procedural")
    assert "simulated 6 participants" in result.stdout
    frame = pd.read_csv(workdir / "2afc-trials.csv")
    assert list(frame.columns) == [*COLUMNS, "choice", "confidence", "references",
                                   "cov_importance"]
    assert frame["participant"].nunique() == 6
    main_trials = frame[frame.trial_kind != "practice"]
    assert (main_trials.groupby("participant").size() == 14).all()  # 12 main + 2 catch
    assert not main_trials.duplicated(["participant", "trial_index"]).any()
    # the simulated observers look at the images, so they do better than chance
    assert main_trials["correct"].mean() > 0.6
    assert (workdir / "2afc-report" / "report.html").stat().st_size > 10_000
    url = f"sqlite:///{workdir / 'assay.db'}"
    out = tmp_path / "trials.parquet"
    export = run("export", "demo-2afc", "--out", out, "--database-url", url)
    assert export.exit_code == 0, export.output
    assert pd.read_parquet(out).shape == frame.shape


def test_demo_builds_its_stimuli_from_a_model(tmp_path):
    config = tmp_path / "build.toml"
    config.write_text(SMALL.format(seed=0))  # the demo CNN, small and on procedural shapes
    workdir = tmp_path / "demo"
    run_demo(workdir, "--simulate", "2", "--build-config", str(config))
    manifest = load_stimulus_set(workdir / "stimuli").manifest
    assert manifest.provenance["layers"] == ["block2", "block3"]
    assert len(manifest.provenance["model"]["checksum"]) == 64
    frame = pd.read_csv(workdir / "2afc-trials.csv")
    assert frame["participant"].nunique() == 2
    assert set(frame["unit_id"]) <= {e.id for e in manifest.entries}


def test_glmm_command_prints_json_and_refuses_bad_input(tmp_path):
    shared = Path(os.environ.get("ASSAY_SHARED", ROOT.parent / "shared"))
    cbpp = shared / "data" / "lme4" / "cbpp.csv"
    if not cbpp.exists():
        pytest.skip(f"shared data not found at {shared}")
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    result = run("glmm", formula, "--data", cbpp, "--factor", "period", "--json")
    assert result.exit_code == 0, result.output
    fit = json.loads(result.output)
    assert set(fit["fixef"]) == {"(Intercept)", "period2", "period3", "period4"}
    assert fit["converged"] and not fit["singular"]
    assert fit["loglik"] == pytest.approx(-92.0263, abs=1e-3)  # lme4 1.1-31
    bad = run("glmm", formula, "--data", cbpp, "--factor", "season")
    assert bad.exit_code == 2 and "--factor 'season' is not a column" in bad.output
    unknown = run("glmm", "incidence ~ colour + (1 | herd)", "--data", cbpp)
    assert unknown.exit_code == 2 and "colour" in unknown.output


def test_simulate_drives_participants_through_a_running_server(app, launch):
    slug = launch()
    with serving(app) as base:
        result = run("simulate", slug, "--participants", "3", "--url", base, "--workers", "3")
        assert result.exit_code == 0, result.output
        assert "3 participants:" in result.output
        unknown = run("simulate", "no-such-study", "--participants", "1", "--url", base)
    assert unknown.exit_code == 2 and "entry failed: 404" in unknown.output
    with app.app_context():
        frame = trial_rows(get_db(), slug)
    assert frame["participant"].nunique() == 3
    assert not frame.duplicated(["participant", "trial_index"]).any()


def test_intruder_demo_ends_with_every_trial_once_and_a_report_with_its_glmm(tmp_path):
    workdir = tmp_path / "demo"
    result = run_demo(workdir, "--study", "intruder", "--simulate", "6", "--stimuli",
                      "procedural")
    assert "simulated 6 participants" in result.stdout
    frame = pd.read_csv(workdir / "intruder-trials.csv")
    assert frame["participant"].nunique() == 6 and set(frame["paradigm"]) == {"intruder"}
    main_trials = frame[frame.trial_kind != "practice"]
    assert (main_trials.groupby("participant").size() == 12 + 2).all()
    assert not frame.duplicated(["participant", "trial_index"]).any()
    assert set(frame["chance"]) == {0.2} and main_trials["correct"].mean() > 0.4
    assert set(frame["intruder_from"]) == {"other_unit", "catch"}
    report = workdir / "intruder-report"
    html = (report / "report.html").read_text()
    assert "Intruder detection" in html and "exclusion rules of launched version 1" in html
    models = pd.read_csv(report / "models.csv")
    assert models["error"].isna().all()
    assert models["formula"].iloc[0] == "correct ~ condition + (1|participant) + (1|unit_id)"
    fixef = pd.read_csv(report / "model_fixef.csv")
    assert "conditionneurons" in set(fixef["term"])


def test_demo_list_methods_and_paradigms_print_the_registries():
    demos = sorted(p.stem for p in (ROOT / "experiments" / "demos").glob("*.toml"))
    listed = run("demo", "--list")
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.output.splitlines()] == demos
    unknown = run("demo", "--study", "nope")
    assert unknown.exit_code == 2
    assert f"no demo study 'nope' (demo studies: {', '.join(demos)})" in unknown.output
    paradigms = run("paradigms").output.splitlines()
    assert [line.split()[:2] for line in paradigms] == [
        [pid, f"r{p.revision}"] for pid, p in PARADIGMS.items()]
    assert "2afc_exemplar" in PARADIGMS
    methods = run("methods").output
    lines = {line.split()[0]: line.split(maxsplit=2)[1:] for line in methods.splitlines()
             if line.startswith("  ")}
    for plugin_id, cls in METHODS.items():
        mark = "" if cls.explains_units else "*"
        assert lines[plugin_id] == [f"r{cls.revision}{mark}", cls.description]
    for plugin_id, cls in SOURCES.items():
        assert lines[plugin_id] == [f"r{cls.revision}", cls.description]
    assert set(MODELS) <= set(lines)
    assert lines["gradcam"][0].endswith("*") and not lines["exemplars"][0].endswith("*")


@pytest.fixture
def launched_db(tmp_path, study_file):
    """A database with the demo study launched and two participants' trials."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert run("study", "launch", study_file, "--database-url", url).exit_code == 0
    from server.app import create_app
    from tests.server.participant_client import Participant, complete
    from tests.server.test_api import session_of

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "x", "INSTANCE_DIR": tmp_path,
                      "ENTRY_RATE_LIMIT": "1000 per minute"})
    for pid, wrong in (("PID-R-1", False), ("PID-R-2", True)):  # not all right: a fit exists
        p = Participant(app.test_client(), "demo-2afc", pid=pid)
        complete(p, session_of(app, p).plan, catch_wrong=wrong, main_wrong_every=3)
    app.extensions["assay.engine"].dispose()
    return url


def test_report_takes_the_rules_of_the_launched_version(tmp_path, launched_db):
    result = run("report", "demo-2afc", "--database-url", launched_db, "--out", tmp_path / "r",
                 "--n-boot", 50)
    assert result.exit_code == 0, result.output
    assert "exclusion rules of launched version 1" in result.output
    table = pd.read_csv(tmp_path / "r" / "exclusions.csv").set_index("rule")
    assert table.loc["catch_min_accuracy", "threshold"] == 0.5  # from the stored spec
    # an export file: the rules still come from the database when it is there
    export = run("export", "demo-2afc", "--out", tmp_path / "t.csv", "--database-url",
                 launched_db)
    assert export.exit_code == 0, export.output
    from_file = run("report", "demo-2afc", "--data", tmp_path / "t.csv", "--database-url",
                    launched_db, "--out", tmp_path / "r2", "--n-boot", 50)
    assert "exclusion rules of launched version 1" in from_file.output
    alone = run("report", "demo-2afc", "--data", tmp_path / "t.csv", "--database-url",
                f"sqlite:///{tmp_path / 'none.db'}", "--out", tmp_path / "r3", "--n-boot", 50)
    assert alone.exit_code == 0 and "no exclusion rules found" in alone.output
    assert not (tmp_path / "none.db").exists()  # a reader never creates a database


def test_export_and_report_never_migrate_and_accept_postgres_spellings(tmp_path, launched_db):
    command.downgrade(alembic_config(launched_db), "0003")
    for args in (("export", "demo-2afc", "--out", tmp_path / "t.csv"),
                 ("report", "demo-2afc", "--out", tmp_path / "r")):
        result = run(*args, "--database-url", launched_db)
        assert result.exit_code == 2
        assert re.search(r"is at schema revision 0003, not \d{4}: run `assay db upgrade` first",
                         result.output)
    assert count(launched_db, Study) == 1  # still there, still at 0003
    spelled = run("export", "demo-2afc", "--out", tmp_path / "t.csv", "--database-url",
                  "postgres://nobody:secret@127.0.0.1:1/none")
    assert spelled.exit_code == 2 and "cannot connect to postgresql+psycopg://nobody:***@" in \
        spelled.output and "secret" not in spelled.output
