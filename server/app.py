"""The Flask application factory. Importing this module opens no connection."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from server import dashboard, health, participant
from server.config import load_config
from server.db import make_engine, make_sessionmaker
from server.extensions import close_db, csrf, limiter, login_manager, wants_json

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5  # what a client waits before retrying while the database is unreachable

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "  # jspsych.css: data: fonts
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


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


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(load_config(config))
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["assay.engine"] = engine
    app.extensions["assay.sessionmaker"] = make_sessionmaker(engine)

    app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"] or "memory://"
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # Redis down: count in this process's memory instead of failing every entry and login
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS",
                          {"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
    limiter.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "dashboard.login"

    app.register_blueprint(participant.pages)
    app.register_blueprint(participant.api)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(health.bp)
    csrf.exempt(participant.api)  # token-authenticated JSON API, no cookies involved
    limiter.exempt(participant.api)  # only entries are limited: skip its hooks per trial

    app.teardown_appcontext(close_db)

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"payload too large (limit {app.config['MAX_CONTENT_LENGTH']} bytes)"
        if wants_json():
            return jsonify(error=message), exc.code
        return render_template("error.html", code=exc.code, message=message), exc.code

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def _database_unavailable(exc: DBAPIError):
        """An unreachable database is a 503 that clients retry (the outbox does; the entry
        page, a navigation browsers do not retry, reloads itself); a broken statement is
        still a 500."""
        if not unavailable(exc):
            return _server_error(exc)
        log.warning("database unavailable on %s %s: %s", request.method, request.path,
                    type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        if wants_json():
            return jsonify(error="the database is unavailable for a moment; retry shortly"), \
                503, headers
        return render_template("unavailable.html", retry_after=RETRY_AFTER_S), 503, headers

    @app.errorhandler(Exception)
    def _server_error(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return jsonify(error="internal server error"), 500
        return render_template("error.html", code=500, message="internal server error"), 500

    return app
