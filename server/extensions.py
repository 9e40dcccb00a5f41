"""Flask extensions and the per-request database session, shared by the blueprints."""

from __future__ import annotations

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import Session

limiter = Limiter(key_func=get_remote_address, default_limits=[])
csrf = CSRFProtect()
login_manager = LoginManager()


def get_db() -> Session:
    """One database session per request, closed at teardown."""
    if "db" not in g:
        g.db = current_app.extensions["assay.sessionmaker"]()
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"
