"""Device and window screening before consent (POST /api/screening), and the withdrawal
link participants keep after the study."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from server.extensions import get_db
from server.models import AuditEntry, ParticipantSession
from server.tokens import HEADER, verify, withdrawal_owner, withdrawal_token
from tests.server.participant_client import Participant, complete
from tests.server.test_dashboard import login

NEED = {"min_width": 1000, "min_height": 700}  # allow_mobile: false by default
SMALL = {"reason": "window_too_small", "width": 800, "height": 600, "mobile": False}
PHONE = {"reason": "mobile", "width": 393, "height": 851, "mobile": True}


def session_of(app, p: Participant) -> ParticipantSession:
    public_id = verify(app.config["SECRET_KEY"], p.token)
    with app.app_context():
        return get_db().scalar(select(ParticipantSession)
                               .where(ParticipantSession.public_id == public_id))


@pytest.mark.parametrize("body, status", [(SMALL, "window_too_small"), (PHONE, "mobile")])
def test_a_failed_check_screens_out_before_consent_without_a_code(app, client, launch,
                                                                  body, status):
    p = Participant(client, launch(screening=NEED), pid="P-screen-" + status)
    assert p.state()["screening"] == {**NEED, "allow_mobile": False}
    response = p.post("screening", body)
    assert response.status_code == 200, response.json
    assert response.json == {"status": "screened_out", "reason": status,
                             "redirect_url": "https://app.prolific.com/"}
    session = session_of(app, p)
    assert (session.status, session.screen_reason) == ("screened_out", status)
    assert session.finished_at is not None and session.consented_at is None
    assert p.post("screening", body).status_code == 200  # a lost response, resent: no-op
    state = p.state()
    assert (state["status"], state["screen_reason"]) == ("screened_out", status)
    # no way on to the study, and no code: neither the completion nor the screen-out code
    refused = p.post("consent", {"agree": True})
    assert refused.status_code == 409 and "'screened_out'" in refused.json["error"]
    done = p.post("finish")
    assert done.json == {"status": "screened_out", "code": None, "redirect_url": None}


# Bad bodies: a 400 whose message names the field.
@pytest.mark.parametrize("body, message", [
    ({**SMALL, "reason": "slow_connection"}, "reason: Input should be 'mobile' or "
                                             "'window_too_small'"),
    ({**SMALL, "width": "800"}, "width: Input should be a valid integer"),
    ({**SMALL, "width": 800.0}, "width: Input should be a valid integer"),
    ({**SMALL, "height": -1}, "height: Input should be greater than or equal to 0"),
    ({**SMALL, "mobile": "no"}, "mobile: Input should be a valid boolean"),
    ({k: v for k, v in SMALL.items() if k != "mobile"}, "mobile: Field required"),
    ({**SMALL, "browser": "chrome"}, "browser: Extra inputs are not permitted"),
    ({**SMALL, "width": 1280, "height": 720}, "reason: a 1280x720 window meets the study's "
                                               "minimum of 1000x700"),
    ({**PHONE, "mobile": False}, "reason: 'mobile' needs mobile = true"),
])
def test_bad_screening_bodies_are_400s_naming_the_field(app, client, launch, body, message):
    p = Participant(client, launch(screening=NEED), pid="P-bad-screen")
    response = p.post("screening", body)
    assert response.status_code == 400
    assert response.json["error"].startswith(message), response.json
    assert session_of(app, p).status == "consent"


def test_screening_is_refused_after_consent_and_where_the_study_does_not_screen(
        app, client, launch):
    p = Participant(client, launch(screening=NEED), pid="P-late")
    assert p.post("consent", {"agree": True}).status_code == 200
    late = p.post("screening", SMALL)
    assert late.status_code == 409
    assert late.json["error"] == "session is in state 'instructions', expected consent"
    assert session_of(app, p).status == "instructions"

    declined = Participant(client, launch(screening=NEED), pid="P-declined")
    assert declined.post("consent", {"agree": False}).status_code == 200
    assert declined.post("screening", SMALL).status_code == 409

    phones_welcome = Participant(client, launch(screening={**NEED, "allow_mobile": True}),
                                 pid="P-phone-ok")
    assert phones_welcome.post("screening", PHONE).status_code == 400

    unscreened = Participant(client, launch(), pid="P-unscreened")
    assert unscreened.state()["screening"] is None
    response = unscreened.post("screening", SMALL)
    assert response.status_code == 409
    assert response.json["error"] == "this study does not screen devices"


def test_a_preview_screened_out_has_nowhere_to_return_to(client, launch):
    p = Participant(client, launch(screening=NEED))  # no platform IDs: a preview
    assert p.post("screening", SMALL).json["redirect_url"] is None
    assert p.state()["return_url"] is None


def test_failed_catch_trials_are_stored_as_the_reason(app, client, launch):
    slug = launch(exclusions={"catch_min_accuracy": 0.9, "screen_out_on_catch": True})
    p = Participant(client, slug, pid="P-catch")
    done = complete(p, session_of(app, p).plan, catch_wrong=True)
    assert done["status"] == "screened_out" and done["code"] == "DEMOSCREEN"
    assert session_of(app, p).screen_reason == "catch_accuracy"


WITHDRAW_LINK = re.compile(r'data-withdraw-url="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_the_withdrawal_link_withdraws_its_session_and_nothing_else(app, client, launch):
    slug = launch()
    p = Participant(client, slug, pid="P-link")
    page = client.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "P-link", "SESSION_ID": "SE"})
    link = WITHDRAW_LINK.search(page.get_data(as_text=True)).group(1)
    assert "P-link" not in link
    public_id = verify(app.config["SECRET_KEY"], p.token)
    token = link.rsplit("/", 1)[-1]
    assert withdrawal_owner(app.config["SECRET_KEY"], token) == public_id
    # it is not a session token, and a session token is not a withdrawal link
    assert client.get("/api/state", headers={HEADER: token}).status_code == 401
    assert client.get(f"/withdraw/{p.token}").status_code == 404
    assert client.get("/withdraw/" + withdrawal_token("another-secret", public_id)
                      ).status_code == 404

    done = complete(p, session_of(app, p).plan)
    assert done["status"] == "completed"
    later = app.test_client()  # weeks later, in another browser
    asked = later.get(link)
    assert asked.status_code == 200 and "Withdraw my responses" in asked.get_data(as_text=True)
    assert session_of(app, p).status == "completed"  # looking at the page changes nothing
    csrf = CSRF.search(asked.get_data(as_text=True)).group(1)
    assert later.post(link, data={}).status_code == 400  # a form without its CSRF token
    answer = later.post(link, data={"csrf_token": csrf})
    assert answer.status_code == 200 and "your responses have been" in answer.get_data(
        as_text=True)
    assert session_of(app, p).status == "withdrawn"
    with app.app_context():
        entry = get_db().scalars(select(AuditEntry).where(AuditEntry.action == "withdraw")
                                 .order_by(AuditEntry.id.desc())).first()
    assert entry.detail["via"] == "link" and entry.detail["deleted_trials"] > 0


def test_the_dashboard_counts_screen_outs_by_reason(app, client, launch):
    slug = launch(screening=NEED)
    for n, body in enumerate([SMALL, SMALL, PHONE]):
        assert Participant(client, slug, pid=f"P-count-{n}").post("screening",
                                                                  body).status_code == 200
    Participant(client, slug, pid="P-count-fine").start()  # consented: not screened out
    login(client, app, is_admin=True)
    page = client.get("/dashboard").get_data(as_text=True)
    section = page[page.index(f'id="study-{slug}"'):]
    section = section[:section.index("</section>")]
    assert "Screened out, by reason:" in section
    assert "mobile 1 · window_too_small 2" in " ".join(section.split())
