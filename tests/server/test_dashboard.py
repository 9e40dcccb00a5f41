"""Researcher pages: login required, CSRF enforced, progress per condition, data downloads
(CSV, Parquet, psych-DS) and Prolific lists, each audited."""

from __future__ import annotations

import io
import re
import zipfile

import pandas as pd
from sqlalchemy import select

from analysis.schema import COLUMNS
from server.access import add_member
from server.export import trial_rows
from server.extensions import get_db
from server.models import AuditEntry, Study
from server.researchers import create_researcher
from tests.cli.test_psychds import violations
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


def audited(app, slug: str) -> list[tuple[str, str, dict]]:
    with app.app_context():
        db = get_db()
        study = db.scalar(select(Study).where(Study.slug == slug))
        return [(e.actor, e.action, e.detail) for e in db.scalars(
            select(AuditEntry).where(AuditEntry.study_id == study.id).order_by(AuditEntry.id))]


def test_trial_data_downloads_as_parquet_and_psych_ds_zip_each_audited(app, client, launch,
                                                                       tmp_path):
    slug = launch()
    for pid, wrong in (("PID-DL-1", False), ("PID-DL-2", True)):
        p = Participant(app.test_client(), slug, pid=pid)
        complete(p, session_of(app, p).plan, catch_wrong=wrong, main_wrong_every=4)
    login(client, app, "downloader", "a long password")
    csv = client.get(f"/dashboard/{slug}/trials.csv")
    parquet = client.get(f"/dashboard/{slug}/trials.parquet")
    assert parquet.status_code == 200 and parquet.mimetype == "application/vnd.apache.parquet"
    assert f'filename="{slug}-trials.parquet"' in parquet.headers["Content-Disposition"]
    from_csv = pd.read_csv(io.BytesIO(csv.data))
    from_parquet = pd.read_parquet(io.BytesIO(parquet.data))
    assert len(from_csv) > 20 and str(from_parquet["responded_at"].dtype).endswith(", UTC]")
    assert from_parquet["correct"].dtype == bool and not from_parquet["correct"].all()
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(from_parquet.to_csv(index=False))),
                                  from_csv)  # the same rows, typed
    zipped = client.get(f"/dashboard/{slug}/psych-ds.zip")
    assert zipped.status_code == 200 and zipped.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(zipped.data))
    data = f"{slug}-psych-ds/data/study-{slug.replace('-', '')}_data.csv"
    assert sorted(archive.namelist()) == [f"{slug}-psych-ds/README.md", data,
                                          f"{slug}-psych-ds/dataset_description.json"]
    archive.extractall(tmp_path)
    assert violations(tmp_path / f"{slug}-psych-ds") == []
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / data), from_csv)
    assert [(actor, action, detail["format"], detail["rows"])
            for actor, action, detail in audited(app, slug)] == [
        ("downloader", "export", fmt, len(from_csv)) for fmt in ("csv", "parquet", "psych-ds")]


def test_prolific_lists_are_for_owners_and_downloads_for_members_only(app, launch):
    slug = launch()
    p = Participant(app.test_client(), slug, pid="PID-ROLE-1")
    complete(p, session_of(app, p).plan)
    downloads = [f"/dashboard/{slug}/{path}" for path in (
        "trials.parquet", "psych-ds.zip")]
    lists = [f"/dashboard/{slug}/prolific/{which}.csv?per_correct=0.10"
             for which in ("approve", "return", "bonus")]
    clients = {}
    for name, role in (("owner-o", "owner"), ("collab-c", "collaborator"),
                       ("viewer-v", "viewer"), ("stranger", None)):
        clients[name] = app.test_client()
        login(clients[name], app, name, "a long password", is_admin=False)
        if role:
            with app.app_context():
                db = get_db()
                with db.begin():
                    add_member(db, slug, name, role)
    expected = {"owner-o": (200, 200), "collab-c": (200, 403), "viewer-v": (200, 403),
                "stranger": (404, 404)}
    for name, (download, listing) in expected.items():
        client = clients[name]
        assert [client.get(url).status_code for url in downloads] == [download] * 2, name
        assert [client.get(url).status_code for url in lists] == [listing] * 3, name
        shown = "Prolific bulk lists" in client.get("/dashboard").get_data(True)
        assert shown == (listing == 200), name
    assert clients["owner-o"].get(lists[0]).get_data(True) == "participant_id\nPID-ROLE-1\n"
    assert [(a, d.get("list", d.get("format"))) for a, _, d in audited(app, slug)] == [
        ("owner-o", "parquet"), ("owner-o", "psych-ds"), ("owner-o", "approve"),
        ("owner-o", "return"), ("owner-o", "bonus"), ("collab-c", "parquet"),
        ("collab-c", "psych-ds"), ("viewer-v", "parquet"), ("viewer-v", "psych-ds"),
        ("owner-o", "approve")]


def test_the_bonus_list_pays_each_correct_main_trial_at_the_study_files_rate(app, client,
                                                                             launch):
    slug = launch(recruitment={"bonus_per_correct": 0.07})
    correct = {}
    for pid, every, catch_wrong in (("PID-B-1", 3, False), ("PID-B-2", 5, False),
                                    ("PID-B-3", 1, False), ("PID-B-4", 0, True)):
        p = Participant(app.test_client(), slug, pid=pid)
        plan = session_of(app, p).plan
        complete(p, plan, main_wrong_every=every, catch_wrong=catch_wrong)
        correct[pid] = sum(1 for t in plan if t["kind"] == "main"
                           and not (every and t["index"] % every == 0))
    Participant(app.test_client(), slug, pid="PID-B-5").start()  # not finished: no bonus
    # by hand: 7 pence per correct main trial; PID-B-3 answered every main trial wrongly
    # (no line for 0), PID-B-4 failed the catch trials and was screened out
    assert correct["PID-B-3"] == 0 and correct["PID-B-2"] > correct["PID-B-1"] > 0
    hand = "".join(f"{pid},{7 * correct[pid] // 100}.{7 * correct[pid] % 100:02d}\n"
                   for pid in ("PID-B-1", "PID-B-2"))
    login(client, app, "payer", "a long password")
    got = client.get(f"/dashboard/{slug}/prolific/bonus.csv")
    assert got.status_code == 200 and got.mimetype == "text/csv"
    assert got.get_data(True) == hand
    typed = client.get(f"/dashboard/{slug}/prolific/bonus.csv?per_correct=1.5")
    assert typed.get_data(True) == "".join(f"{pid},{1.5 * correct[pid]:.2f}\n"
                                           for pid in ("PID-B-1", "PID-B-2"))
    bad = client.get(f"/dashboard/{slug}/prolific/bonus.csv?per_correct=0.005")
    assert bad.status_code == 302
    assert "in whole pence or cents, not &#39;0.005&#39;" in client.get("/dashboard").get_data(True)
    total = (7 * correct["PID-B-1"] + 7 * correct["PID-B-2"]) / 100
    assert [(action, d["list"], d["rows"], float(d["total"]))
            for _, action, d in audited(app, slug)] == [
        ("prolific_list", "bonus", 2, total),
        ("prolific_list", "bonus", 2, 1.5 * (correct["PID-B-1"] + correct["PID-B-2"]))]


def test_a_study_file_without_a_bonus_rule_asks_for_the_amount(app, client, launch):
    slug = launch()
    p = Participant(app.test_client(), slug, pid="PID-NR-1")
    complete(p, session_of(app, p).plan)
    login(client, app, "no-rule", "a long password")
    assert client.get(f"/dashboard/{slug}/prolific/bonus.csv").status_code == 302
    assert "sets no recruitment.bonus_per_correct" in client.get("/dashboard").get_data(True)
    assert audited(app, slug) == []
    assert client.get(f"/dashboard/{slug}/prolific/reject.csv").status_code == 404
