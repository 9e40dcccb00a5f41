"""Alembic migrations: an empty database upgrades to head, and head matches the models."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import DateTime, MetaData, create_engine, inspect, select, text
from sqlalchemy.orm import Session

from server.app import create_app
from server.db import normalize_url
from server.export import pseudonym, trial_rows
from server.extensions import get_db
from server.migrate import alembic_config, upgrade
from server.models import ParticipantSession, PlatformIdentity, Study, TrialResponse
from server.tokens import HEADER, sign
from tests.conftest import app_config, fresh_database


def test_upgrade_from_empty_matches_models(database_url):
    # `database_url` was upgraded from an empty database by the fixture; check adds nothing.
    command.check(alembic_config(database_url))
    engine = create_engine(normalize_url(database_url))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"trial_responses", "sessions", "platform_identities", "study_versions"} <= tables


def test_trial_key_is_unique_in_the_schema(database_url):
    engine = create_engine(normalize_url(database_url))
    uniques = inspect(engine).get_unique_constraints("trial_responses")
    engine.dispose()
    assert any(u["column_names"] == ["session_id", "trial_index"] for u in uniques)


def test_answer_key_migration_backfills_sessions_and_keeps_their_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0002")
    plan = json.dumps([{"index": 0, "correct": "b"}, {"index": 1, "correct": "a"}])
    t = "2026-01-01 00:00:00"
    rows = [
        "INSERT INTO studies VALUES (1, 's', '{t}')",
        "INSERT INTO stimulus_sets VALUES (1, 'd', 'n', '{{}}', '{t}')",
        "INSERT INTO study_versions VALUES (1, 1, 1, '{{}}', 'x', '[]', 1, '{t}')",
        "INSERT INTO sessions (id, public_id, study_id, study_version_id, mode, condition, cell,"
        " status, plan, n_practice, practice_attempts, started_at)"
        " VALUES (1, 'p1', 1, 1, 'live', 'c', 'c', 'trials', '{plan}', 0, 0, '{t}')",
        "INSERT INTO trial_responses VALUES (1, 1, 0, 'b', 2, 1, 900.0, '{t}', '{t}', '{t}', '[]')",
    ]
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        for row in rows:
            conn.execute(row.format(t=t, plan=plan))
    command.upgrade(config, "0003")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("SELECT answer_key FROM sessions").fetchall() == [("ba",)]
        assert conn.execute("SELECT session_id, choice FROM trial_responses").fetchall() == [
            (1, "b")
        ]


# --- 0004: paradigms as plugins, on the rows of a real database at 0003 -----------------------
FIXTURE = Path(__file__).resolve().parent / "data" / "db_0003.json"


def load_rows(url: str, dump: dict) -> None:
    """Insert a dump of make_db_0003.py into a database at revision 0003."""
    engine = create_engine(normalize_url(url))
    meta = MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in meta.sorted_tables:  # parents first
            rows = dump["tables"].get(table.name, [])
            values = []
            for row in rows:
                out = {}
                for key, value in row.items():
                    kind = table.c[key].type
                    if isinstance(value, dict) and set(value) == {"base64"}:
                        value = base64.b64decode(value["base64"])
                    elif isinstance(kind, DateTime) and value is not None:
                        value = datetime.fromisoformat(value)
                    out[key] = value
                values.append(out)
            if values:
                conn.execute(table.insert(), values)
        if conn.dialect.name == "postgresql":
            for name in sorted(dump["tables"]):
                if "id" in meta.tables[name].c:
                    conn.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {name}), 1))"
                    ))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def legacy_url(request, tmp_path) -> Iterator[str]:
    """A database at revision 0003 holding the rows of db_0003.json, upgraded to head."""
    for url in fresh_database(request.param, tmp_path, revision="0003"):
        load_rows(url, json.loads(FIXTURE.read_text()))
        upgrade(url)
        yield url


def test_0004_keeps_every_legacy_trial_and_scores_it_as_before(legacy_url):
    dump = json.loads(FIXTURE.read_text())
    old = {(r["session_id"], r["trial_index"]): r for r in dump["tables"]["trial_responses"]}
    old_plans = {r["id"]: r["plan"] for r in dump["tables"]["sessions"]}
    engine = create_engine(normalize_url(legacy_url))
    with Session(engine) as db:
        rows = db.scalars(select(TrialResponse)).all()
        assert {(r.session_id, r.trial_index) for r in rows} == set(old)
        for r in rows:
            was = old[(r.session_id, r.trial_index)]
            assert r.answer == {"choice": was["choice"], "confidence": was["confidence"]}
            assert r.score == (1.0 if was["correct"] else 0.0) and r.rt_ms == was["rt_ms"]
        sessions = db.scalars(select(ParticipantSession)).all()
        assert len(sessions) == len(old_plans) == 7
        for s in sessions:
            assert s.paradigm == "2afc_exemplar"
            assert s.answer_keys == [t["correct"] for t in old_plans[s.id]]
            for new, was in zip(s.plan, old_plans[s.id], strict=True):
                assert new["source"] == was["unit_kind"] and new["key"] == was["correct"]
                assert new["stimuli"]["query_a"] == was["query_a"]
                assert new["stimuli"]["ref_max"] == was["ref_max"]
        assert {s.state for s in db.scalars(select(Study))} == {"open"}
    engine.dispose()
    command.check(alembic_config(legacy_url))


def test_a_legacy_session_under_way_finishes_on_its_frozen_plan(legacy_url, tmp_path):
    dump = json.loads(FIXTURE.read_text())
    app = create_app({**app_config(legacy_url, tmp_path), "SECRET_KEY": dump["secret_key"]})
    client = app.test_client()
    with app.app_context():
        db = get_db()
        session, identity = db.execute(
            select(ParticipantSession, PlatformIdentity)
            .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
            .where(PlatformIdentity.platform_pid == "LEGACYMAIN")
        ).one()
        public_id, plan = session.public_id, session.plan
        prolific_session = identity.platform_session_id
    headers = {HEADER: sign(dump["secret_key"], public_id)}
    state = client.get("/api/state", headers=headers).json
    assert state["paradigm"]["id"] == "2afc_exemplar" and state["status"] == "trials"
    assert state["progress"]["practice_done"] and state["progress"]["main_done"] > 0
    # the page a returning participant gets (from Prolific's link) loads the 2AFC plugin
    assert prolific_session
    page = client.get("/s/legacy-2afc", query_string={"PROLIFIC_PID": "LEGACYMAIN",
                                                      "SESSION_ID": prolific_session})
    assert "js/paradigms/2afc.js" in page.get_data(as_text=True)
    todo = [t for t in state["trials"] if t["phase"] == "main" and not t["stored"]]
    keys = {t["index"]: t["key"] for t in plan}
    for t in todo:
        body = {"trial_index": t["index"], "answer": {"choice": keys[t["index"]], "confidence": 2},
                "rt_ms": 800.0, "presented_at": "2026-12-01T10:00:00Z",
                "responded_at": "2026-12-01T10:00:01Z"}
        assert client.post("/api/trials", json=body, headers=headers).status_code == 200
    answers = {"answers": {"difficulty": "easy"}}
    assert client.post("/api/questionnaire", json=answers, headers=headers).status_code == 200
    done = client.post("/api/finish", json={}, headers=headers).json
    assert done["status"] == "completed" and done["code"] == "DEMO2AFC"
    with app.app_context():
        frame = trial_rows(get_db(), "legacy-2afc")
    mine = frame[frame["participant"] == pseudonym(public_id)]
    assert len(mine) == len(set(mine["trial_index"])) == sum(
        1 for t in plan if t["kind"] != "practice" or t["attempt"] == 1)
    assert set(frame["choice"].dropna()) <= {"a", "b"} and "cov_importance" in frame
    app.extensions["assay.engine"].dispose()


def test_0007_gives_earlier_screen_outs_their_reason(legacy_url):
    """Before 0007 only failed catch trials screened a session out."""
    engine = create_engine(normalize_url(legacy_url))
    with Session(engine) as db:
        reasons = {s.status: s.screen_reason for s in db.scalars(select(ParticipantSession))}
    engine.dispose()
    assert reasons.pop("screened_out") == "catch_accuracy"
    assert set(reasons.values()) == {None}
