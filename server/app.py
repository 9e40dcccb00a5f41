"""The Flask application factory. Importing this module opens no connection."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from server import dashboard, participant
from server.config import load_config
from server.db import make_engine, make_sessionmaker
from server.extensions import close_db, csrf, limiter, login_manager, wants_json

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "  # jspsych.css: data: fonts
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(load_config(config))
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["assay.engine"] = engine
    app.extensions["assay.sessionmaker"] = make_sessionmaker(engine)

    app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"] or "memory://"
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "dashboard.login"

    app.register_blueprint(participant.pages)
    app.register_blueprint(participant.api)
    app.register_blueprint(dashboard.bp)
    csrf.exempt(participant.api)  # token-authenticated JSON API, no cookies involved

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

    @app.errorhandler(Exception)
    def _server_error(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return jsonify(error="internal server error"), 500
        return render_template("error.html", code=500, message="internal server error"), 500

    return app
