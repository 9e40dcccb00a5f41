"""Study ownership and roles: researchers see only their studies (others' are 404s), a
viewer cannot pause, a collaborator can, and every state change is in the audit log; the
CLI sets owners and members; the migration gives existing studies an admin owner."""

from __future__ import annotations

import secrets

from sqlalchemy import create_engine, select, text

from server.access import add_member
from server.extensions import get_db
from server.migrate import upgrade
from server.models import AuditEntry, Study
from server.researchers import create_researcher
from tests.cli.test_cli import run, study_file  # noqa: F401 (a fixture)
from tests.conftest import fresh_database
from tests.server.participant_client import Participant
from tests.server.test_dashboard import CSRF, login
from tests.server.test_hardening import trial_body


def member(app, slug: str, username: str, role: str) -> None:
    with app.app_context():
        db = get_db()
        with db.begin():
            create_researcher(db, username, "a long password")
            add_member(db, slug, username, role)


def set_state(client, slug: str, state: str):
    token = CSRF.search(client.get("/dashboard").get_data(True)).group(1)
    return client.post(f"/dashboard/{slug}/state", data={"state": state, "csrf_token": token})


def test_researchers_see_only_their_studies(app, launch):
    mine, theirs = launch(), launch()
    member(app, mine, "owner-a", "owner")
    client = app.test_client()
    login(client, app, "stranger", "a long password", is_admin=False)
    page = client.get("/dashboard").get_data(True)
    assert mine not in page and theirs not in page
    assert client.get(f"/dashboard/{mine}/trials.csv").status_code == 404
    assert set_state(client, mine, "paused").status_code == 404
    owner = app.test_client()
    token = CSRF.search(owner.get("/login").get_data(True)).group(1)
    owner.post("/login", data={"username": "owner-a", "password": "a long password",
                               "csrf_token": token})
    page = owner.get("/dashboard").get_data(True)
    assert f'id="study-{mine}"' in page and f'id="study-{theirs}"' not in page
    assert owner.get(f"/dashboard/{mine}/trials.csv").status_code == 200
    assert owner.get(f"/dashboard/{theirs}/trials.csv").status_code == 404
    admin = app.test_client()
    login(admin, app, "root", "a long password")
    page = admin.get("/dashboard").get_data(True)
    assert f'id="study-{mine}"' in page and f'id="study-{theirs}"' in page


def test_viewers_cannot_pause_collaborators_can_and_it_is_audited(app, launch):
    slug = launch()
    inside = Participant(app.test_client(), slug, pid="P-inside")
    inside.start()
    member(app, slug, "viewer-v", "viewer")
    member(app, slug, "collab-c", "collaborator")
    viewer, collab = app.test_client(), app.test_client()
    for client, name in ((viewer, "viewer-v"), (collab, "collab-c")):
        token = CSRF.search(client.get("/login").get_data(True)).group(1)
        client.post("/login", data={"username": name, "password": "a long password",
                                    "csrf_token": token})
    assert "Pause</button>" not in viewer.get("/dashboard").get_data(True)
    assert set_state(viewer, slug, "paused").status_code == 403
    assert viewer.get(f"/dashboard/{slug}/trials.csv").status_code == 200
    assert set_state(collab, slug, "paused").status_code == 302
    # a new participant gets the paused page; the one inside may finish
    page = app.test_client().get(f"/s/{slug}", query_string={"PROLIFIC_PID": "P-new"})
    assert 'data-study-state="paused"' in page.get_data(True)
    assert inside.post("trials", trial_body(0)).status_code == 200
    assert set_state(collab, slug, "open").status_code == 302
    with app.app_context():
        db = get_db()
        study = db.scalar(select(Study).where(Study.slug == slug))
        entries = db.scalars(select(AuditEntry).where(AuditEntry.study_id == study.id)
                             .order_by(AuditEntry.id)).all()
    assert [(e.actor, e.action, e.detail.get("after")) for e in entries] == [
        ("viewer-v", "export", None), ("collab-c", "set_state", "paused"),
        ("collab-c", "set_state", "open")]


def test_the_cli_sets_owners_and_members(tmp_path, study_file):  # noqa: F811
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert run("db", "upgrade", "--database-url", url).exit_code == 0
    unknown = run("study", "launch", study_file, "--owner", "nobody", "--database-url", url)
    assert unknown.exit_code != 0 and "no researcher 'nobody'" in unknown.output
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM studies")) == 0  # nothing half-made
    env = {"ASSAY_NEW_PASSWORD": "a long password"}
    assert run("admin", "create-user", "bob", "--database-url", url, env=env).exit_code == 0
    assert run("admin", "create-user", "carol", "--database-url", url, env=env).exit_code == 0
    launched = run("study", "launch", study_file, "--owner", "bob", "--database-url", url)
    assert launched.exit_code == 0, launched.output
    added = run("admin", "add-member", "demo-2afc", "carol", "--role", "viewer",
                "--database-url", url)
    assert added.exit_code == 0 and "carol is now viewer of demo-2afc" in added.output
    with engine.connect() as conn:
        roles = conn.execute(text(
            "SELECT r.username, m.role FROM study_members m JOIN researchers r "
            "ON r.id = m.researcher_id ORDER BY r.username")).all()
        actions = [row[0] for row in conn.execute(text(
            "SELECT action FROM audit_log ORDER BY id"))]
    engine.dispose()
    assert [tuple(r) for r in roles] == [("bob", "owner"), ("carol", "viewer")]
    assert actions == ["launch", "add_member"]


def test_the_migration_gives_existing_studies_an_admin_owner(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        for name in ("first", "second"):
            conn.execute(text("INSERT INTO researchers (username, password_hash) "
                              "VALUES (:u, 'x')"), {"u": name})
        conn.execute(text("INSERT INTO studies (slug, created_at, state) "
                          "VALUES (:s, CURRENT_TIMESTAMP, 'open')"),
                     {"s": "old-" + secrets.token_hex(3)})
    upgrade(url)
    with engine.connect() as conn:
        admins = [r[0] for r in conn.execute(text(
            "SELECT username FROM researchers WHERE is_admin"))]
        owners = conn.execute(text("SELECT role FROM study_members")).all()
    engine.dispose()
    assert admins == ["first"] and [tuple(o) for o in owners] == [("owner",)]


def test_the_migration_runs_on_postgres(tmp_path):
    for url in fresh_database("postgres", tmp_path, revision="0005"):
        upgrade(url)
