"""Flask extensions and the per-request database session, shared by the blueprints."""

from __future__ import annotations

import logging

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

limiter = Limiter(key_func=get_remote_address, default_limits=[])
csrf = CSRFProtect()
login_manager = LoginManager()


def get_db() -> Session:
    """One database session per request, closed at teardown."""
    if "db" not in g:
        g.db = current_app.extensions["assay.sessionmaker"]()
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    """Closing rolls back what the request left open. On a connection the database has just
    dropped (a restart) that rollback fails; the answer is decided by then, and SQLAlchemy has
    already discarded the connection, so the failure must not turn the answer into a 500."""
    db = g.pop("db", None)
    if db is None:
        return
    try:
        db.close()
    except DBAPIError as exc:
        log.warning("database session not closed cleanly: %s", type(exc.orig).__name__)


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"
