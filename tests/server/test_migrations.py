"""Alembic migrations: an empty database upgrades to head, and head matches the models."""

from __future__ import annotations

import json
import sqlite3

from alembic import command
from sqlalchemy import create_engine, inspect

from server.db import normalize_url
from server.migrate import alembic_config


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
    command.upgrade(config, "head")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("SELECT answer_key FROM sessions").fetchall() == [("ba",)]
        assert conn.execute("SELECT session_id, choice FROM trial_responses").fetchall() == [
            (1, "b")
        ]
