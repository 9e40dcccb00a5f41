"""Probes for load balancers and Kubernetes: liveness (the process answers) and readiness
(it can reach its database), neither behind a login nor rate-limited."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from server.extensions import get_db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def live():
    return jsonify(status="ok")


@bp.get("/readyz")
def ready():
    """503 while the database is unreachable (the app's error handler answers it), so that
    a balancer sends participants to an instance that can store their answers."""
    get_db().execute(text("SELECT 1"))
    return jsonify(status="ready")
