"""The researcher dashboard: login, progress per condition, data download."""

from __future__ import annotations

import io

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from experiments.study import SLUG
from server.export import trial_rows
from server.extensions import get_db, limiter, login_manager
from server.models import Study
from server.researchers import ResearcherUser, authenticate, revoke_logins, study_progress

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


@bp.get("/")
@bp.get("/dashboard")
@login_required
def index():
    return render_template("dashboard.html", studies=study_progress(get_db()))


@bp.get("/dashboard/<slug>/trials.csv")
@login_required
def download(slug: str):
    db = get_db()
    if not SLUG.match(slug) or db.scalar(select(Study.id).where(Study.slug == slug)) is None:
        abort(404, description=f"no study {slug!r}")
    buffer = io.StringIO()
    trial_rows(db, slug).to_csv(buffer, index=False)
    return Response(
        buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{slug}-trials.csv"'},
    )
