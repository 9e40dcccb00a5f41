"""Researcher pages: login required, CSRF enforced, progress per condition, data download."""

from __future__ import annotations

import io
import re

import pandas as pd

from analysis.schema import COLUMNS
from server.export import trial_rows
from server.extensions import get_db
from server.researchers import create_researcher
from tests.server.participant_client import Participant, complete
from tests.server.test_api import session_of

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def login(client, app, username="alice", password="correct horse battery", *,
          is_admin: bool = True):
    """Create a researcher (an admin by default: sees every study) and log them in."""
    with app.app_context():
        db = get_db()
        with db.begin():
            create_researcher(db, username, password, is_admin=is_admin)
    token = CSRF.search(client.get("/login").get_data(True)).group(1)
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )


def test_dashboard_requires_login(client):
    response = client.get("/dashboard")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/dashboard/anything/trials.csv").status_code == 302


def test_login_needs_csrf_token_and_right_password(app, client):
    with app.app_context():
        db = get_db()
        with db.begin():
            create_researcher(db, "bob", "a long password")
    no_token = client.post("/login", data={"username": "bob", "password": "a long password"})
    assert no_token.status_code == 400
    token = CSRF.search(client.get("/login").get_data(True)).group(1)
    wrong = client.post("/login", data={"username": "bob", "password": "nope", "csrf_token": token})
    assert wrong.status_code == 200 and "wrong password" in wrong.get_data(True)
    assert client.get("/dashboard").status_code == 302


def test_dashboard_shows_progress_and_downloads_pseudonymous_data(app, client, launch):
    slug = launch()
    done = Participant(app.test_client(), slug, pid="PID-DASH-1")
    complete(done, session_of(app, done).plan)
    screened = Participant(app.test_client(), slug, pid="PID-DASH-2")
    complete(screened, session_of(app, screened).plan, catch_wrong=True)
    Participant(app.test_client(), slug, pid="PID-DASH-3")
    assert login(client, app).status_code == 302
    page = client.get("/dashboard").get_data(True)
    section = page[page.index(f'id="study-{slug}"') :]
    assert "2afc_exemplar · <span class=\"state\">open</span>" in section
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", section)
    totals = [sum(int(r[i]) for r in rows[:2]) for i in (1, 2, 3)]
    assert totals == [3, 1, 1]  # started, completed, screened out
    csv = client.get(f"/dashboard/{slug}/trials.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    frame = pd.read_csv(io.StringIO(csv.get_data(True)))
    assert list(frame.columns) == [*COLUMNS, "choice", "confidence", "references",
                                   "cov_importance"]
    assert frame["participant"].nunique() == 2
    assert not frame.astype(str).apply(lambda c: c.str.contains("PID-DASH")).any().any()
    assert set(frame["trial_kind"]) == {"practice", "main", "catch"}


def test_export_keys_a_person_the_same_across_studies_without_the_pid(app, launch):
    first, second = launch(), launch()
    for slug in (first, second):
        p = Participant(app.test_client(), slug, pid="PID-REPEAT-7")
        complete(p, session_of(app, p).plan)
    with app.app_context():
        frames = [trial_rows(get_db(), slug) for slug in (first, second)]
    keys = [set(f["participant_key"]) for f in frames]
    assert keys[0] == keys[1] and len(keys[0]) == 1
    key = keys[0].pop()
    assert key.startswith("K-") and "PID-REPEAT-7" not in key
    assert set(frames[0]["participant"]) != set(frames[1]["participant"])  # sessions differ
    session = frames[0].iloc[0]
    assert session["instructions_seconds"] == 30 and session["practice_attempts"] == 1
    assert session["finished_at"] > session["started_at"]
