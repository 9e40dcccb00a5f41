"""POST /api/trials is served below Flask (server/trial_endpoint.py): it must answer as the
Flask views do, with their headers and errors."""

from __future__ import annotations

import io
import json
import logging

import psycopg
import pytest
from sqlalchemy import update

from server.app import create_app
from server.extensions import get_db
from server.migrate import libpq_dsn
from server.models import ParticipantSession
from server.server_process import free_port
from server.tokens import HEADER
from tests.server.participant_client import Participant
from tests.server.test_api import session_of
from tests.server.test_hardening import stored_trials, trial_body

SECURITY = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
            "X-Frame-Options", "Permissions-Policy")


def test_trial_answers_carry_the_flask_views_security_headers(client, launch):
    p = Participant(client, launch(), pid="P-headers")
    p.start()
    state = client.get("/api/state", headers={HEADER: p.token})
    trial = p.post("trials", trial_body(0))
    assert trial.status_code == 200 and trial.mimetype == "application/json"
    assert trial.json == {"stored": True, "duplicate": False}
    assert int(trial.headers["Content-Length"]) == len(trial.get_data())
    for name in SECURITY:
        assert trial.headers[name] == state.headers[name], name


def test_other_methods_are_refused_with_allow(client):
    for method in ("GET", "PUT", "DELETE"):
        response = client.open("/api/trials", method=method)
        assert response.status_code == 405 and response.headers["Allow"] == "POST"
        assert response.json == {"error": "/api/trials takes POST only"}


def test_a_broken_deployment_is_a_logged_500_that_stores_nothing(app, client, launch, caplog):
    """A session whose paradigm this server no longer has (a plugin removed from a
    deployment) cannot be scored: a 500 with a JSON body, logged, nothing stored."""
    p = Participant(client, launch(), pid="P-retired")
    p.start()
    session_id = session_of(app, p).id
    with app.app_context():
        db = get_db()
        with db.begin():
            db.execute(update(ParticipantSession).where(ParticipantSession.id == session_id)
                       .values(paradigm="gone"))
    before = stored_trials(app)
    with caplog.at_level(logging.ERROR, logger="server.trial_endpoint"):
        response = p.post("trials", trial_body(0))
    assert response.status_code == 500 and response.json == {"error": "internal server error"}
    assert "unhandled error on POST /api/trials" in caplog.text
    assert stored_trials(app) == before


def test_a_chunked_body_is_read_to_its_end_and_held_to_the_limit(app, client, launch):
    """A body without Content-Length (chunked) is read through werkzeug's stream, not by its
    declared length: stored when whole, 413 when over the limit."""
    p = Participant(client, launch(), pid="P-chunked")
    p.start()
    headers = {HEADER: p.token, "Content-Type": "application/json"}
    before = stored_trials(app)

    def chunked(body: bytes):
        return client.post("/api/trials", input_stream=io.BytesIO(body), headers=headers,
                           environ_overrides={"wsgi.input_terminated": True,
                                              "CONTENT_LENGTH": ""})  # as a server sends it

    huge = chunked(b"[" + b"1," * 100_000 + b"1]")
    assert huge.status_code == 413 and stored_trials(app) == before
    whole = chunked(json.dumps(trial_body(0)).encode())
    assert whole.status_code == 200 and whole.json == {"stored": True, "duplicate": False}
    assert stored_trials(app) == before + 1


def test_a_dropped_database_connection_is_a_503_and_is_not_handed_out_again(
        app, client, launch, database_url):
    """Trials are stored on the driver's own cursor (server/db.driver_cursor), not through a
    SQLAlchemy Connection: a pooled connection that PostgreSQL dropped (a restart, a failover,
    an idle timeout) must still be answered as an outage, a 503 that the browser retries,
    and be thrown away, so that the retry is stored, once."""
    if not database_url.startswith("postgres"):
        pytest.skip("SQLite has no server to drop a connection")
    p = Participant(client, launch(), pid="P-dropped")
    p.start()
    assert p.post("trials", trial_body(0)).status_code == 200
    pooled = app.extensions["assay.engine"].pool.checkedin()
    before = stored_trials(app)
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert dropped >= pooled >= 1
    answers = [p.post("trials", trial_body(1)) for _ in range(pooled + 1)]
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 503 and answers[0].headers["Retry-After"], statuses
    assert 200 in statuses and set(statuses) <= {200, 503}, statuses  # never a 500
    stored = statuses.index(200)
    assert answers[stored].json == {"stored": True, "duplicate": False}
    assert all(a.json == {"stored": True, "duplicate": True} for a in answers[stored + 1:])
    assert stored_trials(app) == before + 1


def test_a_database_that_refuses_connections_is_a_503(app, client, launch, database_url):
    """A new connection refused (the database restarting) is an outage too: the pool raises
    the driver's error unwrapped from its checkout, which must still become a 503."""
    if not database_url.startswith("postgres"):
        pytest.skip("SQLite has no server to refuse a connection")
    p = Participant(client, launch(), pid="P-refused")
    p.start()
    assert p.post("trials", trial_body(0)).status_code == 200  # the session is known now
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    down = create_app({**app.config, "DATABASE_URL": nowhere})
    try:
        answer = down.test_client().post("/api/trials", json=trial_body(1),
                                         headers={HEADER: p.token})
    finally:
        down.extensions["assay.engine"].dispose()
    assert answer.status_code == 503 and answer.headers["Retry-After"], answer.json
    assert p.post("trials", trial_body(1)).json == {"stored": True, "duplicate": False}
