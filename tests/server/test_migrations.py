"""Alembic migrations: an empty database upgrades to head, and head matches the models."""

from __future__ import annotations

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
