"""The Flask application factory. Importing this module opens no connection."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from server import dashboard, health, participant
from server.config import load_config
from server.db import RETRY_AFTER_S, make_engine, make_sessionmaker, unavailable
from server.extensions import close_db, csrf, limiter, login_manager, wants_json
from server.headers import SECURITY_HEADERS
from server.trial_endpoint import TrialEndpoint

log = logging.getLogger(__name__)

def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(load_config(config))
    engine = make_engine(app.config["DATABASE_URL"], app.config["STATEMENT_TIMEOUT_MS"])
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
    app.wsgi_app = TrialEndpoint(app, app.wsgi_app)  # the hot path, below Flask

    @app.after_request
    def _security_headers(response):
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name, value)
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
