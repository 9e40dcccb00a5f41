"""The researcher dashboard: login, progress per condition, data download."""

from __future__ import annotations

import io

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user

from experiments.study import SLUG
from server.access import ALLOWED, audit, require, role_of, visible_studies
from server.export import trial_rows
from server.extensions import get_db, limiter, login_manager
from server.models import Researcher
from server.researchers import (
    ResearcherUser,
    authenticate,
    progress_series,
    revoke_logins,
    study_progress,
)

bp = Blueprint("dashboard", __name__)


@login_manager.user_loader
def _load_user(user_id: str) -> ResearcherUser | None:
    return ResearcherUser.load(get_db(), user_id)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("20 per minute", methods=["POST"])
def login():
    if request.method == "POST":
        row = authenticate(
            get_db(), request.form.get("username", ""), request.form.get("password", "")
        )
        if row is not None:
            login_user(ResearcherUser(row.id, row.username, row.login_generation))
            return redirect(url_for("dashboard.index"))
        flash("Unknown user or wrong password.")
    return render_template("login.html")


@bp.post("/logout")
@login_required
def logout():
    db = get_db()  # already in the transaction that loaded the user
    revoke_logins(db, int(current_user.id.partition(".")[0]))
    db.commit()
    logout_user()
    return redirect(url_for("dashboard.login"))


def researcher() -> Researcher:
    """The logged-in researcher's row (login_required has loaded a valid one)."""
    return get_db().get(Researcher, current_user.researcher_id)


@bp.get("/")
@bp.get("/dashboard")
@login_required
def index():
    db = get_db()
    me = researcher()
    return render_template("dashboard.html", studies=study_progress(db, visible_studies(db, me)),
                           can_set_state={s.slug for s in visible_studies(db, me)
                                          if role_of(db, me, s) in ALLOWED["set_state"]})


@bp.post("/dashboard/<slug>/state")
@login_required
def set_state(slug: str):
    """Pause, resume (open) or close a study: new participants are let in only while it is
    open; those already inside may finish."""
    state = request.form.get("state", "")
    if state not in ("open", "paused", "closed"):
        abort(400, description="state must be open, paused or closed")
    if not SLUG.match(slug):
        abort(404, description=f"no study {slug!r}")
    db = get_db()
    me = researcher()
    study = require(db, me, slug, "set_state")
    if study.state != state:
        audit(db, me.username, "set_state", study, before=study.state, after=state)
        study.state = state
        db.commit()
    flash(f"{slug} is {state}.")
    return redirect(url_for("dashboard.index"))


@bp.get("/dashboard/<slug>/progress.json")
@login_required
def progress(slug: str):
    if not SLUG.match(slug):
        abort(404, description=f"no study {slug!r}")
    db = get_db()
    return jsonify(progress_series(db, require(db, researcher(), slug, "view")))


@bp.get("/dashboard/<slug>/trials.csv")
@login_required
def download(slug: str):
    db = get_db()
    if not SLUG.match(slug):
        abort(404, description=f"no study {slug!r}")
    me = researcher()
    study = require(db, me, slug, "download")
    buffer = io.StringIO()
    frame = trial_rows(db, slug)
    frame.to_csv(buffer, index=False)
    audit(db, me.username, "export", study, format="csv", rows=len(frame))
    db.commit()
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{slug}-trials.csv"'},
    )
