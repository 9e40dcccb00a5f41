"""Running the Alembic migrations in migrations/ from code (CLI, tests, demo)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import make_url

from server.config import ROOT
from server.db import normalize_url


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = normalize_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a plain libpq connection string (for psycopg)."""
    return (
        make_url(normalize_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


@contextmanager
def scratch_database(
    admin_url: str, prefix: str = "assay_scratch_", revision: str = "head"
) -> Iterator[str]:
    """A new PostgreSQL database beside ``admin_url``'s, migrated to ``revision``, dropped on
    exit. For tests and benchmarks: yields its SQLAlchemy URL.
    """
    name = prefix + secrets.token_hex(6)
    with psycopg.connect(libpq_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(normalize_url(admin_url)).set(database=name)
    try:
        upgrade(url.render_as_string(hide_password=False), revision)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_dsn(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
