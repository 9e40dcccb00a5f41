"""Running the Alembic migrations in migrations/ from code (CLI, tests, demo)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError

from server.config import ROOT
from server.db import make_engine, normalize_url


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = normalize_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


class SchemaError(RuntimeError):
    """A database that is missing, unreachable or not at the newest schema."""


def check_at_head(url: str) -> None:
    """Refuse a database that readers (export, report) cannot use as it is: they never
    create or migrate one. The message names the database (password hidden) and the fix."""
    parsed = make_url(normalize_url(url))
    shown = parsed.render_as_string(hide_password=True)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(file).is_file():
        raise SchemaError(f"no database at {shown}")
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise SchemaError(f"cannot connect to {shown}: {exc.orig}") from None
    finally:
        engine.dispose()
    if current != head:
        raise SchemaError(
            f"the database {shown} is at schema revision {current or 'none'}, not {head}: "
            "run `assay db upgrade` first (export and report never change a database)"
        )


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
