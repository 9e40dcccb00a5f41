"""Regression tests for the defects a hostile tester found in the participant server and
the dashboard (issue 12). Each test reproduces its defect: it fails on the code before the
fix."""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import func, select, text

from server.access_log import AccessLog
from server.app import create_app
from server.catalog import launch_study
from server.config import ROOT
from server.export import trial_rows
from server.extensions import get_db
from server.migrate import libpq_dsn
from server.models import AuditEntry, PlatformIdentity, TrialResponse
from server.serve import ScrubFilter, scrub
from server.tokens import sign
from tests.conftest import app_config, demo_spec
from tests.server.participant_client import TOKEN, Participant, complete
from tests.server.test_api import session_of
from tests.server.test_dashboard import CSRF, login


def trial_body(index: int, **changes) -> dict:
    shown = datetime.now(UTC) - timedelta(minutes=1)
    body = {"trial_index": index, "answer": {"choice": "a", "confidence": 2}, "rt_ms": 900.0,
            "presented_at": shown.isoformat(),
            "responded_at": (shown + timedelta(milliseconds=900)).isoformat()}
    body.update(changes)
    return body


def stored_trials(app) -> int:
    with app.app_context():
        return get_db().scalar(select(func.count()).select_from(TrialResponse))


# 1: implausible timestamps are refused, so that exports keep working
@pytest.mark.parametrize("changes, message", [
    ({"presented_at": "0001-01-01T00:00:00+00:00"}, "presented_at: 0001-01-01"),
    ({"responded_at": "2999-01-01T00:00:00+00:00"}, "responded_at: 2999-01-01"),
    ({"presented_at": 0}, "presented_at: 1970-01-01"),
    ({"responded_at": "2025-01-01T00:00:00+00:00"}, "responded_at: earlier than presented_at"),
])
def test_implausible_timestamps_are_refused(app, client, launch, changes, message):
    slug = launch()
    p = Participant(client, slug, pid="P-time")
    p.start()
    before = stored_trials(app)
    response = p.post("trials", trial_body(0, **changes))
    assert response.status_code == 400 and message in response.json["error"]
    assert stored_trials(app) == before
    assert p.post("trials", trial_body(0)).status_code == 200
    with app.app_context():
        assert len(trial_rows(get_db(), slug)) == 1  # the export still works


# 10: loose typing is refused
@pytest.mark.parametrize("changes, where", [
    ({"trial_index": True}, "trial_index"),
    ({"trial_index": "0"}, "trial_index"),
    ({"trial_index": 0.0}, "trial_index"),
    ({"rt_ms": "900"}, "rt_ms"),
    ({"answer": {"choice": "a", "confidence": "2"}}, "answer.confidence"),
    ({"answer": {"choice": "a", "confidence": 2.0}}, "answer.confidence"),
    ({"answer": {"choice": "a", "confidence": True}}, "answer.confidence"),
    ({"events": [{"type": "blur", "t": "10"}]}, "events.0.t"),
])
def test_loosely_typed_trials_are_refused(app, client, launch, changes, where):
    p = Participant(client, launch(), pid="P-types")
    p.start()
    before = stored_trials(app)
    response = p.post("trials", trial_body(0, **changes))
    assert response.status_code == 400 and response.json["error"].startswith(where)
    assert p.post("consent", {"agree": "yes"}).status_code == 400
    assert stored_trials(app) == before


# 4: deeply nested JSON is a 400, not a RecursionError's 500
def test_deeply_nested_json_is_a_400(client, launch):
    p = Participant(client, launch(), pid="P-nest")
    response = client.post("/api/trials", data="[" * 5000, content_type="application/json",
                           headers={"X-Assay-Session": p.token})
    assert response.status_code == 400 and "nested too deeply" in response.json["error"]


# 9: NUL bytes and lone surrogates never reach the database
@pytest.mark.parametrize("escaped", ["a\\u0000b", "\\ud800", "ok \\udfff"])
def test_questionnaire_refuses_text_the_database_cannot_hold(client, launch, escaped):
    p = Participant(client, launch(), pid="P-text")
    body = '{"answers": {"comments": "' + escaped + '"}}'  # JSON escapes, as sent
    response = client.post("/api/questionnaire", data=body, content_type="application/json",
                           headers={"X-Assay-Session": p.token})
    assert response.status_code == 400, response.json
    assert response.json["error"].startswith("answers.comments")


# 8: a preview never receives the live completion code
def test_a_preview_gets_no_completion_code(app, client, launch):
    slug = launch()
    preview = Participant(client, slug)
    preview.start()
    done = complete(preview, session_of(app, preview).plan)
    assert done["status"] == "completed" and done["code"] is None and done["redirect_url"] is None
    live = Participant(app.test_client(), slug, pid="P-live")
    live.start()
    assert complete(live, session_of(app, live).plan)["code"]  # live still gets it


# 7: a platform ID alone does not take over a session
def test_a_known_pid_alone_does_not_take_over_a_session(app, launch):
    slug = launch()
    owner = app.test_client()
    page = owner.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "victim", "STUDY_ID": "S",
                                                 "SESSION_ID": "secret-session"})
    token = TOKEN.search(page.get_data(True)).group(1)
    attacker = app.test_client()
    stolen = attacker.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "victim"})
    assert stolen.status_code == 409 and TOKEN.search(stolen.get_data(True)) is None
    assert "already started this study in another browser" in stolen.get_data(True)
    guessed = attacker.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "victim",
                                                       "SESSION_ID": "guess"})
    assert guessed.status_code == 409
    # the owner's browser resumes by its cookie, another device by Prolific's link
    again = owner.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "victim"})
    assert TOKEN.search(again.get_data(True)).group(1) == token
    other_device = app.test_client().get(f"/s/{slug}", query_string={
        "PROLIFIC_PID": "victim", "SESSION_ID": "secret-session"})
    assert TOKEN.search(other_device.get_data(True)).group(1) == token
    with app.app_context():
        assert get_db().scalar(select(func.count()).select_from(PlatformIdentity).where(
            PlatformIdentity.platform_pid == "victim")) == 1


# 5: logging out revokes the session cookie
def test_logout_revokes_a_saved_cookie(app, client, launch):
    slug = launch()
    assert login(client, app).status_code == 302
    saved = client.get_cookie("session").value
    assert client.get(f"/dashboard/{slug}/trials.csv").status_code == 200
    token = CSRF.search(client.get("/dashboard").get_data(True)).group(1)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", saved)
    response = replay.get(f"/dashboard/{slug}/trials.csv")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# 6: an unknown username takes as long as a wrong password
def test_login_time_does_not_reveal_which_usernames_exist(app, client):
    login(client, app, "known", "a long password")
    token = CSRF.search(client.get("/login").get_data(True)).group(1)

    def seconds(username: str) -> float:
        start = time.perf_counter()
        client.post("/login", data={"username": username, "password": "wrong password",
                                    "csrf_token": token})
        return time.perf_counter() - start

    seconds("warm-up")
    unknown = statistics.median(seconds(f"nobody-{i}") for i in range(5))
    known = statistics.median(seconds("known") for _ in range(5))
    assert unknown > 0.5 * known, (unknown, known)  # both pay for one password hash


# 3: platform IDs never reach the log through a failed statement's parameters
def test_database_errors_do_not_log_statement_parameters(app, launch, caplog):
    slug = launch()
    engine = app.extensions["assay.engine"]
    with engine.begin() as conn:  # the next lookup of a platform ID fails mid-request
        conn.exec_driver_sql("ALTER TABLE platform_identities RENAME COLUMN platform_pid "
                             "TO platform_pid_old")
    try:
        caplog.set_level(logging.INFO)
        response = app.test_client().get(f"/s/{slug}",
                                         query_string={"PROLIFIC_PID": "PID-SECRET-2"})
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE platform_identities RENAME COLUMN "
                                 "platform_pid_old TO platform_pid")
    assert response.status_code == 500
    assert "unhandled error" in caplog.text and "platform_pid" in caplog.text
    assert "PID-SECRET-2" not in caplog.text


# 14: a database outage is a 503 with Retry-After; the entry page retries by itself
def test_an_unreachable_database_is_a_503_that_retries(tmp_path):
    config = app_config("postgresql+psycopg://nobody@127.0.0.1:1/none", tmp_path)
    app = create_app(config)
    client = app.test_client()
    page = client.get("/s/some-study", query_string={"PROLIFIC_PID": "P1"})
    # the rate limiter's headers may raise Retry-After to its window's end
    assert page.status_code == 503 and int(page.headers["Retry-After"]) >= 5
    assert '<meta http-equiv="refresh" content="5">' in page.get_data(True)
    token = {"X-Assay-Session": sign(config["SECRET_KEY"], "0" * 32)}
    api = client.get("/api/state", headers=token)
    assert api.status_code == 503 and api.headers["Retry-After"] == "5"
    assert "retry" in api.json["error"]
    trial = client.post("/api/trials", json=trial_body(0), headers=token)  # below Flask
    assert trial.status_code == 503 and trial.headers["Retry-After"] == "5"
    assert "retry" in trial.json["error"]
    app.extensions["assay.engine"].dispose()


def test_a_connection_dropped_before_teardown_is_not_a_500(app, client, database_url):
    """The request's database session is closed at teardown, after the answer is decided; a
    connection that PostgreSQL dropped meanwhile (a restart) must not turn it into a 500."""
    if not database_url.startswith("postgres"):
        pytest.skip("SQLite has no server to drop a connection")
    with app.test_request_context():
        db = get_db()
        backend = db.scalar(text("SELECT pg_backend_pid()"))  # a transaction left open
        with psycopg.connect(libpq_dsn(database_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    # leaving the context ran the teardown without raising; the dead connection is gone
    assert client.get("/readyz").status_code == 200


# 2: with Redis down, entries and logins still work (the limiter counts in memory)
def test_entry_and_login_work_with_redis_down(database_url, tmp_path, stimulus_dir):
    config = {**app_config(database_url, tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    app = create_app(config)
    slug = "r-" + secrets.token_hex(4)
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, demo_spec(slug, stimulus_set=stimulus_dir.name),
                         stimulus_dir.parent / "study.toml")
    client = app.test_client()
    assert client.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "P-redis"}).status_code == 200
    assert login(client, app, "redis-down", "a long password").status_code == 302
    app.extensions["assay.engine"].dispose()


# 11: production needs a secret key, and its cookies are HTTPS-only
@pytest.mark.parametrize("key", [None, "", "   "])
def test_production_refuses_to_start_without_a_secret_key(tmp_path, key):
    env = {k: v for k, v in os.environ.items() if k != "ASSAY_SECRET_KEY"}
    env.update(ASSAY_INSTANCE=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/a.db")
    if key is not None:
        env["ASSAY_SECRET_KEY"] = key
    result = subprocess.run([sys.executable, "-c", "import server.wsgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "ASSAY_SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "secret_key").exists()
    env["ASSAY_SECRET_KEY"] = secrets.token_hex(32)
    result = subprocess.run(
        [sys.executable, "-c", "import server.wsgi as w; "
         "print(w.app.config['SESSION_COOKIE_SECURE'])"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")


# 12: the access log cannot be forged, and prose with "?" is left alone (the live server's
# log is checked in test_concurrency's crowd test)
def test_log_lines_cannot_be_forged_and_scrubbing_keeps_prose():
    logged = scrub('"GET /s/x\n127.0.0.1 - forged 200\x00 HTTP/1.1"')  # %0a and %00, decoded
    assert "\n" not in logged and "\x00" not in logged and "/s/x\\x0a127.0.0.1" in logged
    assert scrub("GET /s/demo?PROLIFIC_PID=abc&SESSION_ID=d HTTP/1.1") == \
        "GET /s/demo?[redacted] HTTP/1.1"
    assert scrub("is this the right answer? yes") == "is this the right answer? yes"
    assert scrub("bad query ?PROLIFIC_PID=abc") == "bad query ?[redacted]"
    record = logging.LogRecord("server", logging.ERROR, __file__, 1, "failed on %s",
                               ("/s/demo?PROLIFIC_PID=abc",), None)
    assert ScrubFilter().filter(record) and record.getMessage() == "failed on /s/demo?[redacted]"


def test_the_access_log_writes_one_clean_line_per_request_and_never_the_query_string():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("404 NOT FOUND", [("Content-Type", "text/plain")])
        return [b"no"]

    read, write = os.pipe()
    logged = AccessLog(app, fd=write)
    environ = {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "GET", "SERVER_PROTOCOL":
               "HTTP/1.1", "QUERY_STRING": "PROLIFIC_PID=abc&SESSION_ID=s1"}
    statuses = []
    # %0a and %00 in a URL: decoded, they would start a forged line and put a NUL in the log
    path = '/s/x\n127.0.0.1 "GET /forged HTTP/1.1" 200\x00'
    assert logged({**environ, "PATH_INFO": path}, lambda *a: statuses.append(a[0])) == [b"no"]
    with pytest.raises(RuntimeError):
        logged({**environ, "PATH_INFO": "/boom"}, lambda *a: None)
    logged({**environ, "PATH_INFO": "/s/demo?PROLIFIC_PID=xyz"}, lambda *a: None)  # %3F
    os.close(write)
    with os.fdopen(read) as lines:
        first, second, third = lines.read().splitlines()
    assert statuses == ["404 NOT FOUND"], "the app's answer passes through unchanged"
    assert '10.0.0.7 "GET /s/x\\x0a127.0.0.1 "GET /forged HTTP/1.1" 200\\x00 HTTP/1.1" 404 ' \
        in first and "\x00" not in first
    assert first.endswith(f"ms {os.getpid()}") and first[:4].isdigit()
    assert '"GET /boom HTTP/1.1" 500 ' in second, "a request that raised is logged as a 500"
    assert "/s/demo?[redacted]" in third
    assert not any(secret in first + second + third for secret in ("abc", "s1", "xyz"))


# catch trials: a script that compares image URLs scores at chance
def test_image_urls_are_per_place_so_catch_trials_cannot_be_read_off_urls(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="P-catch")
    state = p.start()
    plan = {t["index"]: t for t in session_of(app, p).plan}
    catch = [t for t in state["trials"] if plan[t["index"]]["kind"] == "catch"]
    assert catch, "the demo study has catch trials"
    urls = []
    for trial in state["trials"]:
        view = trial["view"]
        shown = [*view["ref_max"], *view["ref_min"], view["query_a"], view["query_b"]]
        urls += shown
    assert len(urls) == len(set(urls)), "no URL is shared between places"
    for trial in catch:  # the answer is among the references, yet no query URL repeats one
        view = trial["view"]
        assert {view["query_a"], view["query_b"]}.isdisjoint({*view["ref_max"], *view["ref_min"]})
    # the names resolve to the images, carry no digest, and stay the same on reload
    first = catch[0]["view"]["query_a"]
    image = client.get(first)
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert plan[catch[0]["index"]]["stimuli"]["query_a"] not in first + image.headers["ETag"]
    assert p.state()["trials"][0]["view"] == state["trials"][0]["view"]
    tampered = first[:-6] + ("0" if first[-6] != "0" else "1") + first[-5:]
    assert tampered != first
    assert client.get(tampered).status_code == 404
    assert client.get("/img/p/zz.png").status_code == 404


def test_liveness_and_readiness_probes(client, tmp_path):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}
    down = create_app(app_config("postgresql+psycopg://nobody@127.0.0.1:1/none", tmp_path))
    probe = down.test_client()
    assert probe.get("/healthz").status_code == 200  # alive, but not ready
    assert probe.get("/readyz").status_code == 503
    down.extensions["assay.engine"].dispose()


def test_a_trial_before_the_instructions_arrive_moves_the_session_on(app, client, launch):
    """The outbox may deliver a trial before a lost instructions POST is resent: the trial
    is stored and the session moves on to trials; before consent, it is refused."""
    p = Participant(client, launch(), pid="P-order")
    refused = p.post("trials", trial_body(0))
    assert refused.status_code == 409 and "state 'consent'" in refused.json["error"]
    assert p.post("consent", {"agree": True}).status_code == 200
    assert p.post("trials", trial_body(0)).json == {"stored": True, "duplicate": False}
    assert session_of(app, p).status == "trials"
    assert p.post("trials", trial_body(0)).json == {"stored": True, "duplicate": True}
    different = p.post("trials", trial_body(0, rt_ms=901.0))
    assert different.status_code == 409 and "different answer" in different.json["error"]


def test_a_participant_withdraws_and_their_responses_are_deleted(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="P-withdraw")
    done = complete(p, session_of(app, p).plan)
    assert done["status"] == "completed" and stored_trials(app) > 0
    before = stored_trials(app)
    mine = len([t for t in session_of(app, p).plan if t["kind"] != "practice"])
    response = p.post("withdraw")
    assert response.status_code == 200 and response.json["status"] == "withdrawn"
    assert response.json["deleted"] >= mine and stored_trials(app) == before - response.json[
        "deleted"]
    assert p.post("withdraw").json["deleted"] == 0  # twice: nothing more to delete
    assert p.post("trials", trial_body(0)).status_code == 409  # no new trials after it
    with app.app_context():
        db = get_db()
        assert slug not in set(trial_rows(db, slug)["participant"].map(str))
        entries = db.scalars(select(AuditEntry).where(AuditEntry.action == "withdraw")
                             .order_by(AuditEntry.id)).all()[-2:]
    assert [(e.actor, e.detail["deleted_trials"]) for e in entries] == [
        ("participant", response.json["deleted"]), ("participant", 0)]
