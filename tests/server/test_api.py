"""The participant API and its storage, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil

import pytest
from sqlalchemy import func, select

from server.app import create_app
from server.catalog import launch_study
from server.export import trial_rows
from server.extensions import get_db
from server.models import (
    ParticipantSession,
    PlatformIdentity,
    Study,
    StudyVersion,
    TrialResponse,
)
from server.tokens import HEADER, sign, verify
from tests.conftest import app_config, demo_spec
from tests.server.participant_client import Participant, complete, wrong_choice
from tests.stimuli.test_stimulus_set import v1_manifest


def session_of(app, participant: Participant) -> ParticipantSession:
    public_id = verify(app.config["SECRET_KEY"], participant.token)
    with app.app_context():
        return get_db().scalar(
            select(ParticipantSession).where(ParticipantSession.public_id == public_id)
        )


def n_responses(app, participant: Participant | None = None) -> int:
    with app.app_context():
        query = select(func.count()).select_from(TrialResponse)
        if participant is not None:
            query = query.where(TrialResponse.session_id == session_of(app, participant).id)
        return get_db().scalar(query)


def test_a_participant_completes_a_study(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-complete-1")
    plan = session_of(app, p).plan
    assert p.state()["status"] == "consent"
    done = complete(p, plan)
    assert done == {
        "status": "completed",
        "code": "DEMO2AFC",
        "redirect_url": "https://app.prolific.com/submissions/complete?cc=DEMO2AFC",
    }
    n_expected = sum(1 for t in plan if t["kind"] != "practice" or t["attempt"] == 1)
    assert n_responses(app, p) == n_expected
    stored = session_of(app, p)
    assert stored.status == "completed" and stored.practice_attempts == 1
    assert stored.questionnaire == {"difficulty": "easy"}


def test_correctness_is_scored_on_the_server(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-score")
    p.start()
    first = session_of(app, p).plan[0]
    wrong = wrong_choice(first["key"])
    assert p.answer(0, wrong).status_code == 200
    with app.app_context():
        row = get_db().scalar(
            select(TrialResponse).where(
                TrialResponse.trial_index == 0, TrialResponse.session_id == session_of(app, p).id
            )
        )
    assert row.score == 0.0 and row.answer == {"choice": wrong, "confidence": 2}
    assert row.events == [{"type": "blur", "t": 10.0}]


def test_practice_repeats_until_correct_and_counts_attempts(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-practice")
    p.start()
    plan = session_of(app, p).plan
    first = [t for t in plan if t["kind"] == "practice" and t["attempt"] == 1]
    second = [t for t in plan if t["kind"] == "practice" and t["attempt"] == 2]
    p.answer(first[0]["index"], wrong_choice(first[0]["key"]))
    for t in first[1:]:
        p.answer(t["index"], t["key"])
    progress = p.state()["progress"]
    assert progress["practice_done"] is False and progress["practice_attempt"] == 2
    assert progress["next_index"] == second[0]["index"]
    for t in second:
        p.answer(t["index"], t["key"])
    progress = p.state()["progress"]
    assert progress["practice_done"] is True
    assert progress["next_index"] == next(t["index"] for t in plan if t["kind"] != "practice")


def test_an_answer_at_the_top_level_is_still_stored(app, client, launch):
    """An outbox saved by a page from before answers were nested still delivers."""
    slug = launch()
    p = Participant(client, slug, pid="PID-legacy-body")
    p.start()
    key = session_of(app, p).plan[0]["key"]
    body = {"trial_index": 0, "choice": key, "confidence": 3, "rt_ms": 700.0, **TIMES}
    assert p.post("trials", body).json == {"stored": True, "duplicate": False}
    with app.app_context():
        row = get_db().scalar(select(TrialResponse).where(
            TrialResponse.session_id == session_of(app, p).id))
    assert row.answer == {"choice": key, "confidence": 3} and row.score == 1.0


def test_replay_is_a_noop_and_a_conflicting_replay_is_refused(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-replay")
    p.start()
    assert p.answer(0, "a").json == {"stored": True, "duplicate": False}
    assert p.answer(0, "a").json == {"stored": True, "duplicate": True}
    conflict = p.answer(0, "b")
    assert conflict.status_code == 409
    assert conflict.json["error"] == "trial 0 is already stored with a different answer"
    assert n_responses(app, p) == 1


def test_same_prolific_id_resumes_the_same_session(app, client, launch):
    slug = launch()
    first = Participant(client, slug, pid="PID-resume")
    first.start()
    first.answer(0, "a")
    again = Participant(client.application.test_client(), slug, pid="PID-resume")
    assert verify(app.config["SECRET_KEY"], again.token) == verify(
        app.config["SECRET_KEY"], first.token
    )
    state = again.state()
    assert state["status"] == "trials" and state["trials"][0]["stored"] is True
    with app.app_context():
        n = get_db().scalar(
            select(func.count())
            .select_from(PlatformIdentity)
            .where(PlatformIdentity.platform_pid == "PID-resume")
        )
    assert n == 1


def test_declining_consent_ends_the_session(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-decline")
    assert p.post("consent", {"agree": False}).json == {"status": "declined"}
    refused = p.answer(0)
    assert refused.status_code == 409 and "declined" in refused.json["error"]
    assert p.post("consent", {"agree": False}).status_code == 200  # replay: no-op
    changed = p.post("consent", {"agree": True})
    assert changed.status_code == 409
    assert changed.json["error"] == "session is in state 'declined', expected consent"
    assert session_of(app, p).finished_at is not None


def test_failing_catch_trials_gets_the_screenout_code(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-screen")
    done = complete(p, session_of(app, p).plan, catch_wrong=True)
    assert done["status"] == "screened_out" and done["code"] == "DEMOSCREEN"


def test_finishing_with_missing_trials_is_refused(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-missing")
    p.start()
    p.answer(0, "a")
    response = p.post("finish")
    assert response.status_code == 409
    assert "not stored yet" in response.json["error"] and response.json["missing"]
    assert session_of(app, p).status == "trials"


def test_assignment_balances_cells_and_ignores_preview(app, client, launch):
    slug = launch()
    for _ in range(3):  # preview sessions: no Prolific ID, each from a fresh browser
        Participant(client.application.test_client(), slug)
    for i in range(8):
        Participant(client.application.test_client(), slug, pid=f"PID-bal-{i}")
    with app.app_context():
        rows = (
            get_db()
            .execute(
                select(ParticipantSession.mode, ParticipantSession.cell, func.count())
                .join(StudyVersion)
                .join(Study)
                .where(Study.slug == slug)
                .group_by(ParticipantSession.mode, ParticipantSession.cell)
            )
            .all()
        )
    live = sorted(n for mode, _, n in rows if mode == "live")
    assert live == [2, 2, 2, 2]
    assert sum(n for mode, _, n in rows if mode == "preview") == 3


def live_per_condition(app, slug: str) -> dict[str, int]:
    with app.app_context():
        rows = get_db().execute(
            select(ParticipantSession.condition, func.count())
            .join(Study, ParticipantSession.study_id == Study.id)
            .where(Study.slug == slug, ParticipantSession.mode == "live")
            .group_by(ParticipantSession.condition)
        ).all()
    return dict(rows)


def study_state(app, slug: str) -> str:
    with app.app_context():
        return get_db().scalar(select(Study.state).where(Study.slug == slug))


def arrive(client, slug: str, pid: str):
    query = {"PROLIFIC_PID": pid, "STUDY_ID": "ST", "SESSION_ID": "SE"}
    return client.application.test_client().get(f"/s/{slug}", query_string=query)


def test_conditions_stay_within_one_and_a_full_study_turns_newcomers_away(app, client, launch):
    slug = launch(recruitment={"target_per_condition": 3})
    for i in range(6):
        Participant(client.application.test_client(), slug, pid=f"PID-full-{i}")
        counts = live_per_condition(app, slug)
        assert max(counts.values()) - min(counts.values(), default=0) <= 1, counts
    assert live_per_condition(app, slug) == {"neurons": 3, "dictionary": 3}
    late = arrive(client, slug, "PID-late")
    text = late.get_data(as_text=True)
    assert late.status_code == 200 and 'data-study-state="full"' in text
    assert "data-token" not in text and "no completion code" in text
    assert "https://app.prolific.com/" in text
    assert study_state(app, slug) == "full"
    assert live_per_condition(app, slug) == {"neurons": 3, "dictionary": 3}
    back = arrive(client, slug, "PID-full-0")  # someone inside may come back and finish
    assert 'data-token="' in back.get_data(as_text=True)


def test_a_paused_study_lets_no_newcomer_in_but_previews_and_those_inside(app, client, launch):
    slug = launch()
    inside = Participant(client.application.test_client(), slug, pid="PID-inside")
    with app.app_context():
        db = get_db()
        with db.begin():
            db.scalar(select(Study).where(Study.slug == slug)).state = "paused"
    text = arrive(client, slug, "PID-new").get_data(as_text=True)
    assert 'data-study-state="paused"' in text and "data-token" not in text
    assert live_per_condition(app, slug) == {"neurons": 1}
    assert inside.post("consent", {"agree": True}).status_code == 200
    assert 'data-token="' in arrive(client, slug, "PID-inside").get_data(as_text=True)
    Participant(client.application.test_client(), slug)  # a preview still works


def test_relaunching_makes_versions_and_sessions_keep_theirs(app, client, launch):
    slug = launch()
    old = Participant(client, slug, pid="PID-v1")
    assert launch(slug) == slug  # identical definition: same version
    launch(slug, title="A new title")
    new = Participant(client.application.test_client(), slug, pid="PID-v2")
    with app.app_context():
        versions = {
            s.public_id: s.version.version
            for s in get_db().scalars(
                select(ParticipantSession).join(Study).where(Study.slug == slug)
            )
        }
    assert versions[session_of(app, old).public_id] == 1
    assert versions[session_of(app, new).public_id] == 2


TIMES = {"presented_at": "2026-01-01T00:00:00Z", "responded_at": "2026-01-01T00:00:01Z"}
ANSWER = {"choice": "a", "confidence": 1}
BAD_TRIALS = [
    (
        {"trial_index": 0, "answer": ANSWER, "rt_ms": 5, **TIMES,
         "presented_at": "2026-01-01T00:00:00"},
        400,
        r"^presented_at: Input should have timezone info$",
    ),
    (
        {"trial_index": 10_000, "answer": ANSWER, "rt_ms": 5, **TIMES},
        400,
        r"^trial_index 10000 is outside the plan \(0\.\.\d+\)$",
    ),
    (
        {"trial_index": 0, "answer": {"choice": "c", "confidence": 1}, "rt_ms": 5, **TIMES},
        400,
        r"^answer\.choice: Input should be 'a' or 'b'$",
    ),
    (
        {"trial_index": 0, "answer": {"choice": "a", "confidence": 9}, "rt_ms": 5, **TIMES},
        400,
        r"^answer\.confidence: Input should be less than or equal to 3$",
    ),
    (
        {"trial_index": 0, "answer": {"choice": "a"}, "rt_ms": 5, **TIMES},
        400,
        r"^answer\.confidence: Field required$",
    ),
    ({"trial_index": 0, "answer": ANSWER}, 400, r"^rt_ms: Field required$"),
    (
        {"trial_index": 0, "answer": ANSWER, "rt_ms": 5, "correct": True, **TIMES},
        400,
        r"^correct: Extra inputs are not permitted$",
    ),
    (  # an answer at the top level (pages loaded before answers were nested)
        {"trial_index": 0, "choice": "a", "confidence": 1, "rt_ms": 5, "correct": True, **TIMES},
        400,
        r"^answer\.correct: Extra inputs are not permitted$",
    ),
    (
        {"trial_index": 0, "answer": "a", "rt_ms": 5, **TIMES},
        400,
        r"^answer: Input should be a valid dictionary$",
    ),
]


@pytest.mark.parametrize("body,status,message", BAD_TRIALS)
def test_bad_trials_are_refused_and_store_nothing(app, client, launch, body, status, message):
    slug = launch()
    p = Participant(client, slug, pid="PID-bad")
    p.start()
    before = n_responses(app)
    response = p.post("trials", body)
    assert response.status_code == status
    assert response.is_json
    assert re.match(message, response.json["error"]), response.json
    assert n_responses(app) == before


def test_malformed_json_and_oversized_payloads(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-json")
    p.start()
    before = n_responses(app)
    headers = {HEADER: p.token, "Content-Type": "application/json"}
    broken = client.post("/api/trials", data='{"trial_index": 0,', headers=headers)
    assert broken.status_code == 400 and broken.json == {"error": "request body is not valid JSON"}
    huge = client.post("/api/trials", data="[" + "1," * 100_000 + "1]", headers=headers)
    assert huge.status_code == 413
    assert huge.json == {"error": "payload too large (limit 65536 bytes)"}
    not_json = client.post("/api/trials", data="x=1", headers={HEADER: p.token})
    assert not_json.status_code == 415
    assert n_responses(app) == before


def test_forged_foreign_and_missing_tokens_are_refused(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-token")
    p.start()
    public_id = verify(app.config["SECRET_KEY"], p.token)
    before = n_responses(app)
    body = {
        "trial_index": 0,
        "choice": "a",
        "confidence": 1,
        "rt_ms": 5,
        "presented_at": "2026-01-01T00:00:00Z",
        "responded_at": "2026-01-01T00:00:01Z",
    }
    tokens = {
        "forged": sign("another-secret", public_id),
        "tampered": p.token[:-2] + ("AA" if not p.token.endswith("AA") else "BB"),
        "unknown session": sign(app.config["SECRET_KEY"], "0" * 32),
        "missing": None,
    }
    for name, token in tokens.items():
        headers = {HEADER: token} if token else {}
        response = client.post("/api/trials", json=body, headers=headers)
        assert response.status_code == 401, name
        assert response.json["error"] in (
            f"missing or invalid session token ({HEADER} header)",
            "unknown session",
        ), name
    assert n_responses(app) == before


def test_unknown_study_and_bad_platform_ids(client):
    missing = client.get("/s/no-such-study", query_string={"PROLIFIC_PID": "X1"})
    assert missing.status_code == 404
    assert "no study &#39;no-such-study&#39;" in missing.get_data(True)
    api_missing = client.get("/s/no-such-study", headers={"Accept": "application/json"})
    assert api_missing.status_code == 404
    assert api_missing.json == {"error": "no study 'no-such-study'"}
    bad = client.get("/s/anything", query_string={"PROLIFIC_PID": "<script>"})
    assert bad.status_code == 400
    assert "PROLIFIC_PID must be 1-100 letters" in bad.get_data(True)
    assert "<script>" not in bad.get_data(True)


def test_images_are_immutable_and_headers_are_strict(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="PID-img")
    url = p.state()["trials"][0]["view"]["query_a"]
    image = client.get(url)
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert image.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert client.get(url, headers={"If-None-Match": image.headers["ETag"]}).status_code == 304
    assert client.get("/img/" + "0" * 64 + ".png").status_code == 404
    assert client.get("/img/..%2Fsecret.png").status_code == 404
    page = client.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "PID-img"})
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp.split("script-src")[1][:20]
    assert "<script>" not in page.get_data(True) and "<script src=" in page.get_data(True)


def test_platform_ids_are_not_logged(client, launch, caplog):
    slug = launch()
    with caplog.at_level(logging.DEBUG):
        Participant(client, slug, pid="SECRETPID12345")
    assert caplog.records, "entry should log something"
    assert "SECRETPID12345" not in caplog.text


def test_only_the_signed_sessions_own_trials_are_visible(app, client, launch):
    slug = launch()
    a = Participant(client, slug, pid="PID-own-a")
    b = Participant(client.application.test_client(), slug, pid="PID-own-b")
    a.start()
    a.answer(0, "a")
    assert b.state()["trials"][0]["stored"] is False
    assert n_responses(app, b) == 0


def test_entry_is_rate_limited(database_url, tmp_path):
    limited = create_app({**app_config(database_url, tmp_path), "ENTRY_RATE_LIMIT": "2 per minute"})
    client = limited.test_client()
    slug = "no-such-study-rl"
    codes = [
        client.get(f"/s/{slug}", headers={"Accept": "application/json"}).status_code
        for _ in range(3)
    ]
    assert codes == [404, 404, 429]
    limited.extensions["assay.engine"].dispose()


def test_a_version_1_stimulus_set_launches_and_runs(app, client, stimulus_dir, tmp_path):
    """Sets written before explanations became plugins (schema_version 1) still launch."""
    old = tmp_path / "v1"
    shutil.copytree(stimulus_dir, old)
    v2 = json.loads((stimulus_dir / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps(v1_manifest(v2)))
    spec = demo_spec("v1-" + secrets.token_hex(3), stimulus_set="v1")
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, spec, tmp_path / "study.toml")
    p = Participant(client, spec.slug, pid="PID-v1-set")
    done = complete(p, session_of(app, p).plan)
    assert done["status"] == "completed"
    with app.app_context():
        frame = trial_rows(get_db(), spec.slug)
    assert set(frame["source"]) <= {"neuron", "nmf"} and frame["cov_importance"].notna().all()
