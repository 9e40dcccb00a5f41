"""The researcher dashboard: login, progress per condition, data download."""

from __future__ import annotations

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
from server.export import MEDIA_TYPES, export_bytes, trial_rows
from server.extensions import get_db, limiter, login_manager
from server.models import Researcher, Study
from server.prolific import bonus_csv, bonuses, ids_csv, per_correct_amount, platform_ids
from server.psychds import psych_ds_zip
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
    db, me = get_db(), researcher()
    studies = visible_studies(db, me)
    roles = {s.slug: role_of(db, me, s) for s in studies}
    return render_template("dashboard.html", studies=study_progress(db, studies),
                           can_set_state={k for k, r in roles.items() if r in ALLOWED["set_state"]},
                           can_prolific={k for k, r in roles.items() if r in ALLOWED["prolific"]})


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


def attachment(body: bytes | str, mimetype: str, filename: str) -> Response:
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/dashboard/<slug>/trials.<any(csv, parquet):fmt>")
@login_required
def download(slug: str, fmt: str):
    db, me, study = study_for(slug, "download")
    frame = trial_rows(db, slug)
    body = export_bytes(frame, fmt)
    audit(db, me.username, "export", study, format=fmt, rows=len(frame))
    db.commit()
    return attachment(body, MEDIA_TYPES[fmt], f"{slug}-trials.{fmt}")


@bp.get("/dashboard/<slug>/psych-ds.zip")
@login_required
def download_psych_ds(slug: str):
    """The psych-DS dataset `assay export --psych-ds` writes, as one zip."""
    db, me, study = study_for(slug, "download")
    frame = trial_rows(db, slug)
    body = psych_ds_zip(frame, slug=slug, title=latest_version(db, slug).spec["title"])
    audit(db, me.username, "export", study, format="psych-ds", rows=len(frame))
    db.commit()
    return attachment(body, "application/zip", f"{slug}-psych-ds.zip")


@bp.get("/dashboard/<slug>/prolific/<any(approve, return, bonus):which>.csv")
@login_required
def prolific_list(slug: str, which: str):
    """Prolific's bulk approve / return / bonus file (platform IDs: owners only, audited).
    The bonus takes ``per_correct`` if given, else the study file's rule."""
    db, me, study = study_for(slug, "prolific")
    try:
        if which == "bonus":
            typed = request.args.get("per_correct", "").strip()
            rows = bonuses(db, slug, per_correct_amount(typed) if typed else None)
            body, detail = bonus_csv(rows), {"total": str(sum(a for _, a in rows))}
        else:
            rows = platform_ids(db, slug, which)
            body, detail = ids_csv(rows), {}
    except ValueError as exc:
        flash(f"No {which} list for {slug}: {exc}.")
        return redirect(url_for("dashboard.index"))
    audit(db, me.username, "prolific_list", study, list=which, rows=len(rows), **detail)
    db.commit()
    return attachment(body, "text/csv", f"{slug}-prolific-{which}.csv")
