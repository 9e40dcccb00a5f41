"""Participant-facing routes: the entry page, stimulus images, vendored jsPsych, the JSON API.

API requests carry the signed session token in the X-Assay-Session header; a view parses
its input, calls a plain function, and returns.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)

from experiments.paradigms import PARADIGMS
from experiments.study import SLUG
from server.access import audit
from server.bodies import M, parse_body
from server.export import pseudonym
from server.extensions import get_db, limiter
from server.flow import (
    PROLIFIC_HOME,
    ConsentIn,
    InstructionsIn,
    QuestionnaireIn,
    ScreeningIn,
    answer_questionnaire,
    client_state,
    consent,
    finish,
    instructions_read,
    screen_out,
    withdraw,
)
from server.models import Image
from server.openapi import openapi
from server.sessions import (
    SessionElsewhere,
    StudyNotOpen,
    UnknownStudy,
    get_session,
    start_session,
)
from server.tokens import (
    HEADER,
    image_digest_of,
    image_token,
    participant_key,
    sign,
    verify,
    withdrawal_owner,
    withdrawal_token,
)
from server.trials import FlowError

log = logging.getLogger(__name__)
pages = Blueprint("participant", __name__)
api = Blueprint("api", __name__, url_prefix="/api")

PLATFORM_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Files served from node_modules: a fixed table, so no request path reaches the filesystem.
VENDOR = {
    "jspsych.js": "jspsych/dist/index.browser.min.js",
    "jspsych.css": "jspsych/css/jspsych.css",
    "plugin-html-button-response.js": (
        "@jspsych/plugin-html-button-response/dist/index.browser.min.js"
    ),
    "plugin-survey-html-form.js": "@jspsych/plugin-survey-html-form/dist/index.browser.min.js",
    "plugin-preload.js": "@jspsych/plugin-preload/dist/index.browser.min.js",
    "plugin-instructions.js": "@jspsych/plugin-instructions/dist/index.browser.min.js",
    "plugin-browser-check.js": "@jspsych/plugin-browser-check/dist/index.browser.min.js",
    "chart.js": "chart.js/dist/chart.umd.min.js",  # the dashboard's plots
}
IMMUTABLE = "public, max-age=31536000, immutable"


def placed_image_url(public_id: str) -> Callable[[str, int, int], str]:
    """A participant's images, named per session, trial and place (server.tokens)."""
    secret = current_app.config["SECRET_KEY"]
    return lambda digest, index, slot: url_for(
        "participant.placed_image", token=image_token(secret, public_id, index, slot, digest))


@pages.get("/s/<slug>")
@limiter.limit(lambda: current_app.config["ENTRY_RATE_LIMIT"])
def entry(slug: str):
    if not SLUG.match(slug):
        abort(404, description=f"no study {slug!r}")
    args = {k: request.args.get(k) for k in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")}
    for name, value in args.items():
        if value is not None and not PLATFORM_ID.match(value):
            abort(400, description=f"{name} must be 1-100 letters, digits, '-' or '_'")
    pid = args["PROLIFIC_PID"]
    mode = "preview" if pid is None else ("pilot" if request.args.get("pilot") == "1" else "live")
    db = get_db()
    remembered = session.get("sessions", {}).get(slug)
    not_open = elsewhere = None
    with db.begin():  # a study found full is marked so: commit, then show the page
        existing = get_session(db, remembered) if remembered and pid is None else None
        try:
            psession = existing or start_session(
                db,
                slug,
                mode=mode,
                pid=pid,
                pid_key=participant_key(current_app.config["SECRET_KEY"], pid) if pid else None,
                platform_study_id=args["STUDY_ID"],
                platform_session_id=args["SESSION_ID"],
                user_agent=request.headers.get("User-Agent"),
                remembered=remembered,
            )
        except UnknownStudy:
            abort(404, description=f"no study {slug!r}")
        except SessionElsewhere as exc:
            elsewhere = exc
        except StudyNotOpen as exc:
            not_open = exc
        else:
            public_id = psession.public_id
            title = psession.version.spec["title"]
            paradigm = PARADIGMS[psession.paradigm]
    if not_open is not None:
        log.info("entry to %s refused: the study is %s", slug, not_open.state)
        return render_template("not_open.html", title=not_open.title, state=not_open.state,
                               prolific=PROLIFIC_HOME if mode != "preview" else None)
    if elsewhere is not None:
        log.info("entry to %s refused: the platform ID's session was started elsewhere", slug)
        return render_template("elsewhere.html", title=elsewhere.title), 409
    # the signed cookie remembers the session: what lets this browser resume it
    session["sessions"] = {**session.get("sessions", {}), slug: public_id}
    secret = current_app.config["SECRET_KEY"]
    withdraw_url = url_for("participant.withdraw_link", token=withdrawal_token(secret, public_id),
                           _external=True)
    log.info("entry to %s: session %s (%s)", slug, public_id[:8], mode)
    return render_template("study.html", token=sign(secret, public_id), title=title, mode=mode,
                           withdraw_url=withdraw_url, script=paradigm.script,
                           stylesheet=paradigm.stylesheet)


@pages.route("/withdraw/<token>", methods=["GET", "POST"])
def withdraw_link(token: str):
    """The link participants keep to withdraw later (from the study's last pages): a page
    that asks, and a form that withdraws. It names the session, never the platform ID."""
    public_id = withdrawal_owner(current_app.config["SECRET_KEY"], token)
    db = get_db()
    with db.begin():
        psession = get_session(db, public_id) if public_id else None
        if psession is None:
            abort(404, description="no such withdrawal link")
        if request.method == "POST":
            _withdraw(db, psession, via="link")
        title, withdrawn = psession.version.spec["title"], psession.status == "withdrawn"
    return render_template("withdraw.html", title=title, withdrawn=withdrawn)


@pages.get("/img/<digest>.png")
def image(digest: str):
    """An image by its digest (content addressing; participants' pages use placed names)."""
    if not DIGEST.match(digest):
        abort(404, description="no such image")
    return _png(digest, etag=digest)


@pages.get("/img/p/<token>.png")
def placed_image(token: str):
    """An image under its per-trial name; the ETag is the name, never the digest."""
    digest = image_digest_of(current_app.config["SECRET_KEY"], token)
    if digest is None:
        abort(404, description="no such image")
    return _png(digest, etag=token)


def _png(digest: str, etag: str) -> Response:
    if request.if_none_match.contains(etag):
        return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": IMMUTABLE})
    data = get_db().get(Image, digest)
    if data is None:
        abort(404, description="no such image")
    return Response(data.data, mimetype="image/png",
                    headers={"Cache-Control": IMMUTABLE, "ETag": f'"{etag}"'})


@pages.get("/vendor/<name>")
def vendor(name: str):
    if name not in VENDOR:
        abort(404, description="no such file")
    root = current_app.config["NODE_MODULES"]
    if not root.is_dir():
        abort(500, description="node_modules is missing: run `npm ci` in the project root")
    return send_from_directory(root, VENDOR[name], max_age=3600)


# --- the JSON API ---------------------------------------------------------------------------

def parse(model: type[M]) -> M:
    """The request body as ``model`` (server/bodies.py says what is refused, and how)."""
    return parse_body(model, request.content_type or "", request.get_data(cache=False))


def _token_owner() -> str | None:
    """The public id the request's signed token names; None without a valid one."""
    token = request.headers.get(HEADER, "")
    return verify(current_app.config["SECRET_KEY"], token) if token else None


def participant_only(view: Callable) -> Callable:
    """Load the session named by the signed token; refuse a missing, forged or foreign one."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        public_id = _token_owner()
        if public_id is None:
            return jsonify(error=f"missing or invalid session token ({HEADER} header)"), 401
        db = get_db()
        try:
            with db.begin():
                g.psession = get_session(db, public_id)
                if g.psession is None:
                    return jsonify(error="unknown session"), 401
                return view(db, g.psession, *args, **kwargs)
        except FlowError as exc:  # raised inside the transaction, so nothing was stored
            return jsonify(error=str(exc), **exc.extra), exc.status

    return wrapper


@api.get("/openapi.json")
def openapi_description():
    return jsonify(openapi())


@api.get("/state")
@participant_only
def state(db, psession):
    return jsonify(client_state(db, psession, placed_image_url(psession.public_id)))


@api.post("/consent")
@participant_only
def post_consent(db, psession):
    consent(psession, parse(ConsentIn))
    return jsonify(status=psession.status)


@api.post("/instructions")
@participant_only
def post_instructions(db, psession):
    instructions_read(psession, parse(InstructionsIn))
    return jsonify(status=psession.status)


@api.post("/questionnaire")
@participant_only
def post_questionnaire(db, psession):
    answer_questionnaire(db, psession, parse(QuestionnaireIn))
    return jsonify(status=psession.status)


@api.post("/screening")
@participant_only
def post_screening(db, psession):
    """The browser check failed before consent: screened out, sent back without a code."""
    done = screen_out(psession, parse(ScreeningIn))
    log.info("session %s screened out: %s", psession.public_id[:8], psession.screen_reason)
    return jsonify(status=done.status, reason=psession.screen_reason,
                   redirect_url=done.redirect_url)


def _withdraw(db, psession, via: str) -> int:
    """The participant withdraws: their responses are deleted, on the audit record."""
    deleted = withdraw(db, psession)
    audit(db, "participant", "withdraw", psession.version.study,
          session=pseudonym(psession.public_id), deleted_trials=deleted, via=via)
    return deleted


@api.post("/withdraw")
@participant_only
def post_withdraw(db, psession):
    deleted = _withdraw(db, psession, via="page")
    return jsonify(status=psession.status, deleted=deleted)


@api.post("/finish")
@participant_only
def post_finish(db, psession):
    done = finish(db, psession)
    return jsonify(status=done.status, code=done.code, redirect_url=done.redirect_url)
