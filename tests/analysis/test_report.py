"""The HTML report: self-contained, escaped, with its CSV files; from a file, the database
and the Borowski et al. data; and rendered in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.borowski import data_path, write_borowski_report
from analysis.covariates import standardize_covariates
from analysis.load import read_trials, tidy
from analysis.report import ModelSpec, report_command, write_report
from experiments.study import load_study
from server.export import trial_rows, write_export
from server.extensions import get_db
from tests.analysis.conftest import shared_dir
from tests.analysis.test_exclusions import make_trials
from tests.conftest import demo_spec
from tests.server.participant_client import Participant, complete
from tests.server.test_api import session_of

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demos" / "2afc.toml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run"]
IMG = re.compile(r'<img src="([^"]*)"')
FILES = {"accuracy.csv", "accuracy_by_condition.csv", "chance_tests.csv", "exclusions.csv",
         "exclusion_funnel.csv", "covariate_trends.csv", "model_fixef.csv",
         "model_random.csv", "models.csv", "participants.csv", "trials_flagged.csv",
         "units.csv", "report.html"}


def study_trials() -> pd.DataFrame:
    people = {f"P-{i:02d}": {"condition": "neurons" if i % 2 else "dictionary",
                             "accuracy": 0.55 + 0.04 * i} for i in range(10)}
    people["P-10"] = {"condition": "neurons", "accuracy": 0.3, "catch_correct": 0}
    people["P-11"] = {"condition": "dictionary", "status": "abandoned"}
    return make_trials(people, n_units=6)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return write_report(study_trials(), {"catch_min_accuracy": 0.5}, out, n_boot=200)


@pytest.fixture(scope="module")
def borowski_report(tmp_path_factory) -> Path:
    path = data_path(shared_dir())
    if not path.exists():
        pytest.skip(f"Borowski et al. data not found at {path} (set ASSAY_SHARED)")
    return write_borowski_report(tmp_path_factory.mktemp("borowski"), path, n_boot=300)


def test_report_files_and_self_contained_html(report):
    assert {p.name for p in report.parent.iterdir()} == FILES
    html = report.read_text()
    assert "<script" not in html and "<link" not in html
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    images = IMG.findall(html)
    # exclusion funnel, accuracy, participants, units, RT, confidence, units against
    # importance, fixed effects
    assert len(images) == 8
    assert "Fixed effects" in html
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "correct ~ condition + (1|participant) + (1|unit_id)" in html
    assert "catch-trial accuracy below 0.5" in html


def test_report_csv_results(report):
    out = report.parent
    exclusions = pd.read_csv(out / "exclusions.csv").set_index("rule")
    assert exclusions.loc["incomplete", "newly_excluded"] == 1
    assert exclusions.loc["catch_min_accuracy", "newly_excluded"] == 1
    participants = pd.read_csv(out / "participants.csv").set_index("participant")
    assert participants["excluded"].sum() == 2 and len(participants) == 12
    assert pd.read_csv(out / "trials_flagged.csv")["participant"].nunique() == 12
    models = pd.read_csv(out / "models.csv")
    assert models["error"].isna().all()
    assert models["family"].tolist() == ["binomial(logit)", "gaussian", "binomial(logit)"]
    assert models["formula"].iloc[2] == \
        "correct ~ condition * layer + importance_z + (1|participant) + (1|unit_id)"
    fixef = pd.read_csv(out / "model_fixef.csv")
    first = fixef[fixef["model"] == models["model"].iloc[0]]
    assert set(first["term"]) == {"(Intercept)", "conditionneurons"}
    third = fixef[fixef["model"] == models["model"].iloc[2]]
    assert "importance_z" in set(third["term"]) and "conditionneurons:layerlate" in set(
        third["term"])
    assert {"se", "se_rx", "p", "ci_lower", "ci_upper"} <= set(fixef.columns)
    accuracy = pd.read_csv(out / "accuracy_by_condition.csv")
    assert accuracy["n_participants"].tolist() == [5, 5]


def test_report_escapes_text_and_keeps_model_errors(tmp_path):
    trials = study_trials()
    trials["condition"] = trials["condition"].cat.rename_categories(
        {"neurons": '<script>alert("x")</script>'})
    models = [ModelSpec("Broken", "correct ~ colour + (1|participant)")]
    html = write_report(trials, None, tmp_path, models=models, n_boot=50).read_text()
    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "Not fitted: unknown column &#39;colour&#39; in formula" in html
    assert pd.read_csv(tmp_path / "models.csv").loc[0, "error"] == \
        "unknown column 'colour' in formula"


def test_report_command_from_an_export_file(tmp_path):
    data = tmp_path / "trials.parquet"
    write_export(study_trials(), data)
    path = report_command("demo-2afc", read_trials(data), spec=load_study(DEMO),
                          rules_note="rules from 2afc.toml", source="export file",
                          out_dir=tmp_path / "r", n_boot=50)
    html = path.read_text()
    assert "Which image belongs with the examples?" in html  # the study's title
    assert "rules from 2afc.toml" in html


def test_report_command_refuses_trials_or_rules_of_another_study(tmp_path):
    trials = study_trials()
    with pytest.raises(ValueError, match=r"^the trials are of study demo-2afc, not 'other'$"):
        report_command("other", trials, out_dir=tmp_path / "r")
    spec = load_study(DEMO).model_copy(update={"slug": "other"})
    with pytest.raises(ValueError, match=r"^the exclusion rules are of study 'other', not "
                                         r"'demo-2afc'$"):
        report_command("demo-2afc", trials, spec=spec, out_dir=tmp_path / "r")
    with pytest.raises(ValueError, match=r"^study 'demo-2afc': no trials to report on$"):
        report_command("demo-2afc", trials.iloc[:0], out_dir=tmp_path / "r")


def test_report_from_the_study_database(app, launch, tmp_path):
    slug = launch()
    done = Participant(app.test_client(), slug, pid="PID-REP-1")
    complete(done, session_of(app, done).plan, main_wrong_every=3)  # not all right: a fit
    screened = Participant(app.test_client(), slug, pid="PID-REP-2")
    complete(screened, session_of(app, screened).plan, catch_wrong=True, main_wrong_every=3)
    with app.app_context():
        trials = tidy(trial_rows(get_db(), slug))
    assert trials["participant"].nunique() == 2
    assert trials["correct"].dtype == bool and trials["cov_importance"].dtype == float
    path = report_command(slug, trials, spec=demo_spec(slug), source="study database",
                          out_dir=tmp_path, n_boot=50)
    sessions = pd.read_csv(tmp_path / "participants.csv")
    assert sorted(sessions["status"]) == ["completed", "screened_out"]
    assert sessions["excluded"].sum() == 1
    assert "study database" in path.read_text()


def test_covariates_are_standardized_over_units_within_source_and_layer():
    trials = pd.DataFrame({
        "unit_id": ["a", "a", "a", "b", "c", "d", "e"],
        "source": ["nmf"] * 3 + ["nmf", "nmf", "neuron", "neuron"],
        "layer": ["l1"] * 7,
        "cov_importance": [1.0, 1.0, 1.0, 2.0, 3.0, 10.0, 10.0],
    })
    z = standardize_covariates(trials)["importance_z"]
    # nmf units a, b, c count once each (a has three trials): mean 2, sd 1
    assert z.tolist()[:5] == pytest.approx([-1.0, -1.0, -1.0, 0.0, 1.0])
    assert z.tolist()[5:] == [0.0, 0.0]  # one value for every neuron: no spread
    with pytest.raises(ValueError, match="no covariate column 'cov_size'"):
        standardize_covariates(trials, ["size"])


def test_the_analysis_never_imports_the_server():
    code = ("import sys, analysis, analysis.report, analysis.load, analysis.exclusions, "
            "analysis.covariates, analysis.borowski; "
            "print(sorted(m for m in sys.modules if m == 'server' or m.startswith('server.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_borowski_report(borowski_report):
    html = borowski_report.read_text()
    assert "Reproduced here: natural 92.2 %, synthetic 82.0 %." in html
    assert "Accuracy by reference type (binomial GLMM, logit link)" in html
    assert "condition in {natural, synthetic}" in html
    fixef = pd.read_csv(borowski_report.parent / "model_fixef.csv")
    first = fixef[fixef["model"].str.startswith("Accuracy by reference type")]
    assert first["term"].tolist() == ["(Intercept)", "conditionsynthetic"]
    utility = pd.read_csv(borowski_report.parent / "utility.csv").set_index("method")
    assert utility.loc["natural", "utility"] > utility.loc["synthetic", "utility"] > 1


def _chromium_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed"
    return None


@pytest.mark.browser
@pytest.mark.parametrize("which", ["report", "borowski_report"])
def test_report_in_headless_chromium(which, request, tmp_path):
    reason = _chromium_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run under CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    path: Path = request.getfixturevalue(which)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(path.as_uri())
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? "
                                   "i.naturalWidth : 0)")
            assert len(widths) >= 5 and min(widths) > 0
            # Nothing wider than the window: tables scroll inside their own boxes.
            assert page.evaluate("document.documentElement.scrollWidth") <= 1366
            shots = Path(os.environ.get("ASSAY_SCREENSHOTS", tmp_path))
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"{which}.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
