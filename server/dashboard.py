"""The researcher dashboard: login, progress per condition, data download."""

from __future__ import annotations

import io
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy.orm import Session

from analysis.report import report_command
from experiments.study import SLUG, StudySpec
from server.access import ALLOWED, audit, require, role_of, set_study_state, visible_studies
from server.catalog import latest_version
from server.export import trial_rows
from server.extensions import get_db, limiter, login_manager
from server.models import Researcher, Study
from server.researchers import (
    ResearcherUser,
    authenticate,
    progress_series,
    revoke_logins,
    study_progress,
)
from stimuli.stimulus_set import ImageRef, Pair, StimulusManifest

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


def study_for(slug: str, action: str) -> tuple[Session, Researcher, Study]:
    """The study a URL names, if the logged-in researcher may do ``action`` on it (else
    404 or 403), with the request's database session and the researcher."""
    if not SLUG.match(slug):
        abort(404, description=f"no study {slug!r}")
    db, me = get_db(), researcher()
    return db, me, require(db, me, slug, action)


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
    db, me, study = study_for(slug, "set_state")
    if set_study_state(db, study, state, me.username):
        db.commit()
    flash(f"{slug} is {state}.")
    return redirect(url_for("dashboard.index"))


@bp.get("/dashboard/<slug>/progress.json")
@login_required
def progress(slug: str):
    db, _, study = study_for(slug, "view")
    return jsonify(progress_series(db, study))


PER_PAGE = 12


def shown_images(role) -> list[str]:
    """The digests a role shows, in order (single images, or pairs' max then min)."""
    out = []
    for item in role:
        if isinstance(item, ImageRef):
            out.append(item.image)
        elif isinstance(item, Pair):
            out += [item.max.image, item.min.image]
    return out


@bp.get("/dashboard/<slug>/stimuli")
@login_required
def stimuli(slug: str):
    """The stimulus browser: the units (or decisions, categories) of the study's newest
    version and each method's explanation of them, as the images participants see."""
    db, _, _ = study_for(slug, "view")
    version = latest_version(db, slug)
    manifest = StimulusManifest.model_validate(version.stimulus_set.manifest)
    page = max(1, request.args.get("page", 1, type=int))
    entries = manifest.entries[(page - 1) * PER_PAGE:page * PER_PAGE]
    shown = [{"entry": e, "stimulus": e.stimulus.image if e.stimulus else None,
              "methods": {m: {r: shown_images(role) for r, role in roles.items()}
                          for m, roles in e.explanations.items()}} for e in entries]
    pages = max(1, -(-len(manifest.entries) // PER_PAGE))
    return render_template("stimuli.html", slug=slug, version=version.version,
                           name=manifest.name, shown=shown, page=page, pages=pages,
                           total=len(manifest.entries))


def _report_dir(slug: str) -> Path:
    """Where a study's dashboard report is kept (slug already validated: no user path)."""
    return Path(current_app.config["INSTANCE_DIR"]) / "reports" / slug


@bp.get("/dashboard/<slug>/report")
@login_required
def report(slug: str):
    """The study's HTML report (self-contained), generated on first view and on demand."""
    study_for(slug, "view")
    path = _report_dir(slug) / "report.html"
    if not path.exists():
        return regenerate_report(slug)
    return send_file(path.resolve(), mimetype="text/html", max_age=0)


@bp.post("/dashboard/<slug>/report")
@login_required
def regenerate_report(slug: str):
    db, _, _ = study_for(slug, "view")
    frame = trial_rows(db, slug)
    version = latest_version(db, slug)
    spec = StudySpec.model_validate(version.spec)
    try:
        report_command(slug, frame, spec=spec, out_dir=_report_dir(slug), n_boot=1000,
                       source=f"the study database, version {version.version}'s rules")
    except ValueError as exc:
        flash(f"No report for {slug} yet: {exc}.")
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("dashboard.report", slug=slug))


@bp.get("/dashboard/<slug>/trials.csv")
@login_required
def download(slug: str):
    db, me, study = study_for(slug, "download")
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
