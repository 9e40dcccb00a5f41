"""Engines and sessions. SQLite runs in WAL mode with immediate transactions, so that writes
(condition assignment above all) are serialized there as row locks serialize them on PostgreSQL."""

from __future__ import annotations

import sqlite3

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_URL = "sqlite:///assay.db"
RETRY_AFTER_S = 5  # what a client waits before retrying while the database is unreachable


def normalize_url(url: str) -> str:
    """Accept the usual ``postgres://`` and ``postgresql://`` spellings; use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, statement_timeout_ms: int = 0) -> Engine:
    """Statement parameters are hidden from errors and logs: they hold platform IDs.
    ``statement_timeout_ms`` (PostgreSQL; 0: none) cancels a statement that runs longer."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    options = {"options": f"-c statement_timeout={statement_timeout_ms}"} \
        if statement_timeout_ms else {}
    return create_engine(url, pool_size=10, max_overflow=20, connect_args=options,
                         hide_parameters=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def unavailable(exc: DBAPIError) -> bool:
    """Whether a database error means "not reachable now" (retry) rather than a bug: a lost
    connection, PostgreSQL's operational errors (refused, shutting down, too many clients),
    SQLite's locked or unopenable file. SQLite also reports a missing column as an
    OperationalError: that one stays a 500."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.Error):
        return any(s in str(exc.orig) for s in ("locked", "unable to open", "disk I/O"))
    return True
