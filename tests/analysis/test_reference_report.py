"""Reference conditions in the data: participants without catch trials (the condition
without references) under the catch exclusion rule, the export's ``references`` column, and
the report's accuracy by reference condition."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis.exclusions import apply_exclusions
from analysis.load import read_trials, tidy
from analysis.report import write_report
from experiments.paradigms.two_afc_report import accuracy_by_references, references_section
from server.export import trial_rows, write_export
from server.extensions import get_db
from tests.analysis.test_exclusions import make_trials
from tests.server.participant_client import Participant, complete
from tests.server.test_api import session_of

LABELS = {"natural": "exemplars", "synthetic": "maco", "both": "exemplars+maco",
          "none": "none", "accentuated": "accentuation"}
ACCURACY = {"natural": 0.9, "synthetic": 0.8, "both": 0.85, "none": 0.55, "accentuated": 0.75}
IMG = re.compile(r'<img src="([^"]*)"')


def reference_trials() -> pd.DataFrame:
    """Four participants per reference condition; those of "none" have no catch trials, and
    one natural participant fails them."""
    people = {f"P-{c}-{i}": {"condition": c, "accuracy": ACCURACY[c] - 0.05 * (i % 2)}
              for c in LABELS for i in range(4)}
    people["P-natural-0"]["catch_correct"] = 0
    people["P-none-0"]["catch_correct"] = 0  # would fail, but has no catch trials
    trials = make_trials(people, n_units=6)
    trials = trials[~((trials["condition"] == "none") & (trials["trial_kind"] == "catch"))]
    trials = trials.assign(references=trials["condition"].astype(str).map(LABELS))
    return tidy(trials)


def test_participants_without_catch_trials_are_not_judged_by_the_catch_rule():
    result = apply_exclusions(reference_trials(), {"catch_min_accuracy": 0.5})
    sessions = result.sessions
    none = sessions[sessions["condition"] == "none"]
    assert (none["n_catch"] == 0).all() and none["catch_accuracy"].isna().all()
    assert not none["excluded"].any()
    assert sessions.loc["P-natural-0", "excluded"]
    assert sessions["excluded"].sum() == 1
    rule = result.table.set_index("rule").loc["catch_min_accuracy"]
    assert rule["note"] == "4 participant(s) without catch trials not judged"


def test_accuracy_by_references_table():
    trials = reference_trials()
    main = trials[trials["trial_kind"] == "main"]
    table = accuracy_by_references(main).set_index("references")
    assert list(table.index) == ["accentuation", "exemplars", "exemplars+maco", "maco", "none"]
    for condition, label in LABELS.items():
        row = table.loc[label]
        per_p = main[main["condition"] == condition].groupby(
            "participant", observed=True)["correct"].mean()
        assert row["conditions"] == condition
        assert (row["participants"], row["trials"]) == (4, 80)
        assert row["participant_mean"] == pytest.approx(per_p.mean())
        assert row["lower"] <= row["participant_mean"] <= row["upper"]
    again = accuracy_by_references(main)
    pd.testing.assert_frame_equal(again, accuracy_by_references(main))  # seeded bootstrap


def test_the_section_says_how_it_relates_to_conditions_and_catch_trials():
    flagged = apply_exclusions(reference_trials(), {"catch_min_accuracy": 0.5}).trials
    section = references_section(flagged, chance=0.5)
    text = " ".join(section.paragraphs)
    assert "the report's models, which compare conditions, compare these groups" in text
    assert "Condition(s) none had no catch trials" in text
    assert "cannot exclude their participants" in text
    pooled = flagged.assign(condition="all")  # one condition showing every kind
    assert "do not coincide" in " ".join(references_section(pooled, 0.5).paragraphs)
    assert references_section(flagged.drop(columns="references"), 0.5) is None


def test_report_shows_accuracy_by_reference_condition(tmp_path):
    path = write_report(reference_trials(), {"catch_min_accuracy": 0.5}, tmp_path, n_boot=100)
    html = path.read_text()
    assert "Accuracy by reference condition" in html
    assert "exemplars+maco" in html and "Condition(s) none had no catch trials" in html
    assert "4 participant(s) without catch trials not judged" in html
    assert len(IMG.findall(html)) == 9  # the report's eight figures and this section's
    assert "correct ~ condition + (1|participant) + (1|unit_id)" in html


def test_the_references_column_survives_export_files(tmp_path):
    trials = reference_trials()
    for suffix in (".csv", ".parquet"):
        write_export(trials, tmp_path / f"t{suffix}")
        back = read_trials(tmp_path / f"t{suffix}")
        assert isinstance(back["references"].dtype, pd.CategoricalDtype)
        assert set(back["references"]) == set(LABELS.values())  # "none" is not missing


def test_a_no_reference_condition_beside_catch_trials_through_the_server(app, launch,
                                                                         tmp_path):
    """Assignment and screening are paradigm-blind: the participant of the condition without
    references has no catch trials and is never screened out; the export names what each
    trial showed."""
    slug = launch(conditions=[
        {"name": "natural", "source": "neuron"},
        {"name": "none", "source": "neuron",
         "roles": {"max_refs": "none", "min_refs": "none"}},
    ])
    statuses = {}
    people = [Participant(app.test_client(), slug, pid=pid) for pid in ("PID-R1", "PID-R2")]
    for p in people:  # both arrived before either finished: one in each condition
        session = session_of(app, p)
        kinds = [t["kind"] for t in session.plan]
        assert kinds.count("catch") == (0 if session.condition == "none" else 2)
        statuses[session.condition] = complete(p, session.plan, catch_wrong=True)["status"]
    assert statuses == {"natural": "screened_out", "none": "completed"}
    with app.app_context():
        frame = trial_rows(get_db(), slug)
    by_condition = frame.groupby("condition")["references"].agg(set).to_dict()
    assert by_condition == {"natural": {"exemplars"}, "none": {"none"}}
    trials = tidy(frame)
    path = write_report(trials, {"catch_min_accuracy": 0.5}, tmp_path, n_boot=50)
    html = path.read_text()
    assert "Accuracy by reference condition" in html
    assert "Condition(s) none had no catch trials" in html
    assert np.isfinite(pd.read_csv(tmp_path / "accuracy_by_condition.csv")["accuracy"]).all()
