"""Engines and sessions. SQLite runs in WAL mode with immediate transactions, so that writes
(condition assignment above all) are serialized there as row locks serialize them on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Engine, Executable, create_engine, event
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


@dataclass(frozen=True)
class DriverStatement:
    """A Core statement compiled once for one dialect, to run on the driver's own cursor (see
    :func:`driver_cursor`). The column types' bind processors still convert the values, as
    SQLAlchemy would, so that a row stored here reads back like any other."""

    sql: str
    order: tuple[str, ...] | None  # parameter names in order (a positional paramstyle)
    defaults: dict[str, Any]  # the statement's own values, already converted
    processors: dict[str, Callable[[Any], Any]]

    @classmethod
    def compile(cls, statement: Executable, dialect: Dialect) -> DriverStatement:
        compiled = statement.compile(dialect=dialect)
        processors = {}
        for name in compiled.params:
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        defaults = {name: processors[name](value) if name in processors else value
                    for name, value in compiled.params.items() if value is not None}
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        return cls(str(compiled), order, defaults, processors)

    def parameters(self, values: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        params = {**self.defaults}
        for name, value in values.items():
            process = self.processors.get(name)
            params[name] = value if process is None or value is None else process(value)
        return params if self.order is None else tuple(params[name] for name in self.order)


@contextmanager
def driver_cursor(engine: Engine) -> Iterator[Any]:
    """A pooled connection's own cursor, for a hot path that SQLAlchemy's per-execution work
    (execution context, parameter and result objects, isolation switching) slows by a third:
    a trial cost the app 0.37 ms of CPU here against 0.56 through a Connection (paired in one
    process), and granian's workers 0.58-0.73 against 0.80-0.91 ms (two servers, old and
    new, under the same interleaved load, twice).

    Its statements run in one transaction: on PostgreSQL in autocommit, for a single statement
    that is atomic by itself (BEGIN and COMMIT would be two more round trips); on SQLite in
    BEGIN IMMEDIATE ... COMMIT. Driver errors leave as SQLAlchemy's DBAPIError, with a lost
    connection invalidated, as from a Connection, so callers tell an outage from a bug alike."""
    dialect, postgres = engine.dialect, engine.dialect.name == "postgresql"
    fairy, cursor, lost = None, None, False
    try:
        fairy = engine.raw_connection()  # a refused connection is raised unwrapped here too
        if postgres:
            fairy.driver_connection.autocommit = True
        cursor = fairy.cursor()
        if not postgres:
            cursor.execute("BEGIN IMMEDIATE")
        yield cursor
        if not postgres:
            cursor.execute("COMMIT")
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, fairy, cursor)
        if lost and fairy is not None:
            fairy.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error,
                                  hide_parameters=True, connection_invalidated=lost,
                                  dialect=dialect) from None
    finally:
        if fairy is not None:
            if postgres and not lost:
                try:
                    fairy.driver_connection.autocommit = False
                except dialect.loaded_dbapi.Error:  # broken meanwhile: not handed out again
                    fairy.invalidate()
            fairy.close()  # back to the pool, rolled back (SQLite: an unfinished transaction)
