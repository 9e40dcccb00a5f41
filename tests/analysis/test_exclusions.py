"""Loading export files and applying the study file's exclusion rules in their fixed order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from analysis.exclusions import ORDER, apply_exclusions, as_rules
from analysis.load import read_trials, session_table, tidy
from analysis.schema import COLUMNS, SESSION_COLUMNS
from experiments.study import Exclusions, load_study
from server.export import write_export

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_trials(people: dict[str, dict] | None = None, *, n_main: int = 20, n_catch: int = 4,
                layers: tuple[str, ...] = ("early", "late"), n_units: int = 4,
                session_columns: bool = False) -> pd.DataFrame:
    """A small tidy export. Per participant (keys optional): condition, status, accuracy
    (fraction of main trials correct), catch_correct, practice_attempts, choice ('mixed',
    'a'), minutes (session length), instructions (seconds), key (participant_key)."""
    people = people or {f"P-{i:02d}": {"condition": "neurons" if i % 2 else "dictionary",
                                        "accuracy": 0.5 + 0.05 * i} for i in range(8)}
    rows = []
    for n, (pid, p) in enumerate(people.items()):
        attempts = p.get("practice_attempts", 1)
        kinds = ["practice"] * (2 * attempts) + ["main"] * n_main + ["catch"] * n_catch
        n_right = round(p.get("accuracy", 0.75) * n_main)
        start = T0 + timedelta(hours=n)
        step = timedelta(minutes=p.get("minutes", 10)) / len(kinds)
        main_i = catch_i = 0
        for i, kind in enumerate(kinds):
            if kind == "main":
                correct, main_i = main_i < n_right, main_i + 1
            elif kind == "catch":
                correct, catch_i = catch_i < p.get("catch_correct", n_catch), catch_i + 1
            else:
                correct = True
            choice = p.get("choice", "mixed")
            choice = ("a" if i % 2 else "b") if choice == "mixed" else choice
            unit = i % n_units
            rows.append({
                "study": "demo-2afc", "study_version": 1, "participant": pid, "mode": "live",
                "condition": p.get("condition", "neurons"), "cell": p.get("condition", "neurons"),
                "status": p.get("status", "completed"),
                "block": 0 if kind == "practice" else 1 + i % 2, "trial_index": i,
                "attempt": 1 + i // 2 if kind == "practice" else 1, "trial_kind": kind,
                "unit_id": f"u{unit}", "source": "neuron", "paradigm": "2afc_exemplar",
                "layer": layers[unit % len(layers)], "choice": choice,
                "confidence": 1 + i % 3, "correct": correct, "chance": 0.5,
                "rt_ms": 800.0 + 37 * (i % 11),
                "presented_at": start + i * step, "responded_at": start + (i + 0.9) * step,
                "n_events": 2,
                "started_at": start - timedelta(minutes=1),
                "finished_at": start + len(kinds) * step + timedelta(minutes=1),
                "instructions_seconds": p.get("instructions", 60.0),
                "practice_attempts": attempts, "participant_key": p.get("key", "k-" + pid),
                "cov_importance": 0.01 * (unit + 1),
            })
    frame = pd.DataFrame(rows)
    extra = ["choice", "confidence", "cov_importance"]
    if not session_columns:  # trial columns only, as an export without session data
        frame = frame[[c for c in COLUMNS if c not in SESSION_COLUMNS] + extra]
    return tidy(frame)


RULES = {"catch_min_accuracy": 0.75, "instructions_min_seconds": 20, "total_minutes_min": 5,
         "total_minutes_max": 30, "max_same_response_fraction": 0.9, "max_practice_attempts": 2}
PEOPLE = {
    "P-ok": {},
    "P-ok2": {"condition": "dictionary"},
    "P-quit": {"status": "abandoned", "catch_correct": 0},  # incomplete AND fails catch
    "P-catch": {"catch_correct": 2},
    "P-fast-instr": {"instructions": 5.0},
    "P-quick": {"minutes": 2},
    "P-slow": {"minutes": 45, "choice": "a"},  # too slow AND one-sided
    "P-side": {"choice": "a"},
    "P-practice": {"practice_attempts": 3},
    "P-again": {"key": "k-P-ok"},  # the same person as P-ok, later
}


@pytest.fixture(scope="module")
def flagged():
    return apply_exclusions(make_trials(PEOPLE, session_columns=True), RULES)


def test_rules_flag_in_order_with_counts(flagged):
    table = flagged.table.set_index("rule")
    assert list(table.index) == [r.key for r in ORDER]
    assert table["flagged"].to_dict() == {
        "incomplete": 1, "catch_min_accuracy": 2, "instructions_min_seconds": 1,
        "total_minutes_min": 1, "total_minutes_max": 1, "max_same_response_fraction": 2,
        "max_practice_attempts": 1, "repeat": 1}
    assert table["newly_excluded"].to_dict() == {
        "incomplete": 1, "catch_min_accuracy": 1, "instructions_min_seconds": 1,
        "total_minutes_min": 1, "total_minutes_max": 1, "max_same_response_fraction": 1,
        "max_practice_attempts": 1, "repeat": 1}
    assert table["remaining"].tolist() == [9, 8, 7, 6, 5, 4, 3, 2]
    assert (table["note"] == "").all()


def test_reasons_are_the_first_rule_and_nobody_is_dropped(flagged):
    s = flagged.sessions
    assert s.loc[~s["excluded"]].index.tolist() == ["P-ok", "P-ok2"]
    assert s.loc["P-quit", "exclusion_reason"] == "session not completed"
    assert bool(s.loc["P-quit", "catch_min_accuracy"])  # flagged by the later rule too
    assert s.loc["P-slow", "exclusion_reason"] == "total time over 30.0 min"
    assert s.loc["P-side", "exclusion_reason"] == \
        "over 0.9 of responses on one side or button"
    assert s.loc["P-again", "exclusion_reason"] == "repeat participation"
    t = flagged.trials
    assert t["participant"].nunique() == len(PEOPLE)
    assert t["excluded"].dtype == bool
    by_person = t.groupby("participant", observed=True)["excluded"].agg(["min", "max"])
    assert (by_person["min"] == by_person["max"]).all()
    assert set(flagged.included["participant"]) == {"P-ok", "P-ok2"}


def test_the_funnel_counts_participants_and_trials_left_after_each_rule(flagged):
    funnel = flagged.funnel
    assert funnel["step"].tolist() == ["all sessions", *flagged.table["description"]]
    assert funnel["participants"].tolist() == [10, 9, 8, 7, 6, 5, 4, 3, 2]
    # 26 trials a person (2 practice, 20 main, 4 catch); P-practice practised thrice: 30.
    # Out in order: quit, catch, fast-instr, quick, slow, side, practice (30), again.
    assert funnel["trials"].tolist() == [264, 238, 212, 186, 160, 134, 108, 78, 52]
    assert funnel["main_trials"].tolist() == [200, 180, 160, 140, 120, 100, 80, 60, 40]
    assert funnel["participants"].iloc[1:].tolist() == flagged.table["remaining"].tolist()
    assert funnel["trials"].iloc[-1] == len(flagged.included)


def test_the_funnel_leaves_out_unset_rules_and_marks_rules_the_data_cannot_judge():
    result = apply_exclusions(make_trials(PEOPLE),  # no session columns
                              {"catch_min_accuracy": 0.75, "instructions_min_seconds": 20})
    funnel = result.funnel
    assert funnel["step"].tolist() == [
        "all sessions", "session not completed", "catch-trial accuracy below 0.75",
        "instructions read in under 20.0 s (not applied)",
        "repeat participation (not applied)"]
    assert funnel["participants"].tolist() == [10, 9, 8, 8, 8]
    assert funnel["main_trials"].tolist() == [200, 180, 160, 160, 160]


def test_rules_from_the_study_file_and_unset_rules():
    spec = load_study(ROOT / "experiments" / "demos" / "2afc.toml")
    assert as_rules(spec) == spec.exclusions
    result = apply_exclusions(make_trials(PEOPLE), spec)
    table = result.table.set_index("rule")
    assert table.loc["instructions_min_seconds", "note"] == "not set"
    assert table.loc["catch_min_accuracy", "description"] == "catch-trial accuracy below 0.5"
    # demo: catch >= 0.5, practice attempts <= 3; P-quit is incomplete, P-practice used 3.
    assert result.sessions.index[result.sessions["excluded"]].tolist() == ["P-quit"]


def test_rules_without_data_say_so_instead_of_passing_everyone():
    trials = make_trials(PEOPLE)  # trial columns only
    result = apply_exclusions(trials, RULES)
    notes = result.table.set_index("rule")["note"]
    assert notes["instructions_min_seconds"] == \
        "not applied: the data have no instructions_seconds"
    assert notes["repeat"] == "not applied: the data have no participant_key"
    assert notes["total_minutes_max"].startswith("total time from trial timestamps")
    # Derived from the trials: practice attempts and total time.
    s = result.sessions
    assert s.loc["P-practice", "practice_attempts"] == 3
    assert s.loc["P-slow", "total_minutes"] == pytest.approx(45 - 0.1 * 45 / 26)
    assert bool(s.loc["P-slow", "total_minutes_max"])


def test_prior_participants_count_as_repeats():
    trials = make_trials({"P-a": {"key": "old"}, "P-b": {"key": "new"}}, session_columns=True)
    result = apply_exclusions(trials, None, prior_participant_keys={"old"})
    assert result.sessions["repeat"].to_dict() == {"P-a": True, "P-b": False}


def test_session_table_side_and_button_fractions():
    s = session_table(make_trials({"P-a": {"choice": "a"}, "P-b": {}}))
    assert s.loc["P-a", "side_fraction"] == 1.0
    assert s.loc["P-a", "button_fraction"] == pytest.approx(8 / 24)
    assert s.loc["P-b", "side_fraction"] == 0.5
    assert s.loc["P-b", "catch_accuracy"] == 1.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_files_round_trip_with_types(tmp_path, suffix):
    trials = make_trials()
    path = tmp_path / f"trials{suffix}"
    write_export(trials, path)
    back = read_trials(path)
    pd.testing.assert_frame_equal(back, trials, check_categorical=False)
    assert back["correct"].dtype == bool
    assert back["rt_ms"].dtype == float
    assert str(back["presented_at"].dt.tz) == "UTC"
    assert back["trial_kind"].cat.categories.tolist() == ["practice", "main", "catch"]
    assert isinstance(back["participant"].dtype, pd.CategoricalDtype)


def _without(col: str) -> pd.DataFrame:
    return make_trials().drop(columns=col)


def _with(col: str, value: object) -> pd.DataFrame:
    frame = make_trials().astype({col: object})
    frame.loc[3, col] = value
    return frame


@pytest.mark.parametrize("frame, message", [
    (lambda: _without("correct"), r"^not a trial export: missing column\(s\) correct$"),
    (lambda: _without("rt_ms").drop(columns="layer"),
     r"^not a trial export: missing column\(s\) layer, rt_ms$"),
    (lambda: _with("correct", "maybe"),
     r"^column 'correct': 1 value\(s\) are not true/false \(first: 'maybe'\)$"),
    (lambda: _with("chance", "half"), r"^column 'chance': values must be numbers$"),
    (lambda: _with("confidence", "high"),
     r"^column 'confidence': 1 value\(s\) are not integers \(first: 'high'\)$"),
    (lambda: _with("attempt", 1.5),
     r"^column 'attempt': 1 value\(s\) are not integers \(first: 1.5\)$"),
    (lambda: _with("rt_ms", "fast"), r"^column 'rt_ms': values must be numbers$"),
])
def test_bad_trial_tables(frame, message):
    with pytest.raises(ValueError, match=message):
        tidy(frame())


def test_bad_files_and_rules(tmp_path):
    with pytest.raises(ValueError, match=r"trials.xlsx: trial data must be a .csv or "
                                         r".parquet file$"):
        read_trials(tmp_path / "trials.xlsx")
    with pytest.raises(TypeError, match="^exclusion rules must be a StudySpec, Exclusions or "
                                        "dict, not int$"):
        as_rules(42)
    with pytest.raises(ValidationError, match="catch_min_accuracy"):
        as_rules({"catch_min_accuracy": 1.5})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        as_rules({"catch_accuracy": 0.5})
    flagged = apply_exclusions(make_trials(), Exclusions()).trials
    with pytest.raises(ValueError, match=r"^trials are already flagged \(column 'excluded' "
                                         r"exists\)$"):
        apply_exclusions(flagged, None)


def test_exports_of_before_paradigm_plugins_still_load(tmp_path):
    """unit_kind was renamed source; paradigm and chance did not exist: all 2AFC."""
    old = make_trials().drop(columns=["paradigm", "chance"]).rename(
        columns={"source": "unit_kind"})
    old.to_csv(tmp_path / "old.csv", index=False)
    back = read_trials(tmp_path / "old.csv")
    assert "unit_kind" not in back and back["source"].astype(str).unique().tolist() == ["neuron"]
    assert back["paradigm"].astype(str).unique().tolist() == ["2afc_exemplar"]
    assert (back["chance"] == 0.5).all()


def test_same_response_rule_is_not_applied_without_a_choice_column():
    result = apply_exclusions(make_trials().drop(columns=["choice", "confidence"]),
                              {"max_same_response_fraction": 0.9})
    note = result.table.set_index("rule").loc["max_same_response_fraction", "note"]
    assert note == "not applied: the data have no choice column"
