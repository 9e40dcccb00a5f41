"""The `assay` command: one subcommand per stage, wiring the packages together."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
from decimal import Decimal
from pathlib import Path

import click
import pandas as pd
from sqlalchemy import select

from analysis import glmm, lmm
from analysis.load import read_trials, tidy
from analysis.power import FORMULA, PowerDesign, power_curve, power_plot
from analysis.report import report_command
from assay import __version__
from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import PlanError
from experiments.study import StudyFileError, StudySpec, load_study, stimulus_dir
from server.access import (
    add_member,
    audit,
    purge_platform_ids,
    set_study_state,
)
from server.app import create_app
from server.catalog import import_stimulus_set, latest_version, launch_study
from server.config import load_config
from server.devserver import serving
from server.export import trial_rows, write_export
from server.extensions import get_db
from server.migrate import SchemaError, check_at_head, upgrade
from server.models import ROLES, STUDY_STATES, Study
from server.prolific import (
    LISTS,
    bonus_csv,
    bonuses,
    ids_csv,
    per_correct_amount,
    platform_ids,
)
from server.psychds import describe_study, write_psych_ds
from server.researchers import create_researcher
from server.simulate import SimulationError, simulate
from stimuli.procedural import build_procedural_set
from stimuli.stimulus_set import StimulusSetError, load_stimulus_set

ROOT = Path(__file__).resolve().parent.parent
DEMOS = ROOT / "experiments" / "demos"  # one study file per demo: `assay demo --study NAME`
DEMO_USER = ("demo", "demo-password")
DEMO_BUILD = ROOT / "stimuli" / "configs" / "demo-build.toml"
DEMO_BUILDS = DEMOS / "builds"  # <study>.toml: a demo's own build (other methods, say)

db_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    default=None,
    help="SQLAlchemy URL (env DATABASE_URL; default: SQLite in ./.assay).",
)
base_url_option = click.option(
    "--base-url",
    envvar="ASSAY_BASE_URL",
    default="http://127.0.0.1:5000",
    show_default=True,
    help="Public address of the server, for the printed participant URL.",
)


def _app(database_url: str | None, **extra):
    config = {"DATABASE_URL": database_url} if database_url else {}
    app = create_app({**config, **extra})
    upgrade(app.config["DATABASE_URL"])
    return app


def _reader_app(database_url: str | None):
    """An app on an existing database at the newest schema, which it never changes."""
    url = database_url or load_config()["DATABASE_URL"]
    try:
        check_at_head(url)
    except SchemaError as exc:
        _fail(str(exc))
    return create_app({"DATABASE_URL": url})


def launched_spec(db_session, slug: str) -> tuple[StudySpec, int] | None:
    """The spec of a study's newest launched version, and that version's number."""
    version = latest_version(db_session, slug)
    if version is None:
        return None
    return StudySpec.model_validate(version.spec), version.version


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def participant_url(base_url: str, slug: str) -> str:
    return (
        f"{base_url.rstrip('/')}/s/{slug}"
        "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    )


@click.group()
@click.version_option(__version__)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
def main(verbose: bool) -> None:
    """Assay: human studies of neural-network explanations."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@db_option
def db_upgrade(database_url: str | None) -> None:
    """Create or migrate the schema to the newest version (alembic upgrade head)."""
    _app(database_url)
    click.echo("database is at the newest schema")


@main.group()
def stimuli() -> None:
    """Stimulus sets."""


@stimuli.command("import")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@db_option
def stimuli_import(directory: Path, database_url: str | None) -> None:
    """Verify a stimulus set and load it into the database (idempotent)."""
    try:
        stimulus_set = load_stimulus_set(directory)
    except StimulusSetError as exc:
        _fail(str(exc))
    app = _app(database_url)
    with app.app_context():
        db_session = get_db()
        with db_session.begin():
            row = import_stimulus_set(db_session, stimulus_set)
    click.echo(
        f"stimulus set {row.name} {row.digest[:12]}: "
        f"{len(stimulus_set.manifest.entries)} entries, {len(stimulus_set.images)} images"
    )


@stimuli.command("build")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
def stimuli_build(config: Path) -> None:
    """Build a stimulus set from a model and images (resumable: finished work is reused)."""
    from stimuli.build import build_stimuli  # torch takes seconds to import: only here

    try:
        digest = build_stimuli(config)
    except (ValueError, StimulusSetError) as exc:
        _fail(str(exc))
    click.echo(f"built stimulus set {digest[:12]} from {config}")


@stimuli.command("demo")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True)
def stimuli_demo(directory: Path, seed: int) -> None:
    """Write the small procedural stimulus set used by tests and the demo."""
    digest = build_procedural_set(directory, seed=seed)
    click.echo(f"wrote {directory} ({digest[:12]})")


@main.group()
def study() -> None:
    """Study definitions."""


@study.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def study_validate(file: Path) -> None:
    """Check a study file without touching the database."""
    try:
        spec = load_study(file)
    except StudyFileError as exc:
        _fail(str(exc))
    click.echo(f"{file}: valid ({spec.slug}, {len(spec.conditions)} condition(s))")


@study.command("launch")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--owner", help="The researcher who owns the study (sees and manages it).")
@db_option
@base_url_option
def study_launch(file: Path, owner: str | None, database_url: str | None,
                 base_url: str) -> None:
    """Validate a study, import its stimuli, create a version, print the participant URL."""
    try:
        spec = load_study(file)
        app = _app(database_url)
        with app.app_context():
            db_session = get_db()
            with db_session.begin():
                launched = launch_study(db_session, spec, file)
                study_row = db_session.scalar(select(Study).where(Study.slug == launched.slug))
                if owner is not None:
                    add_member(db_session, launched.slug, owner, "owner")
                audit(db_session, "cli", "launch", study_row, version=launched.version,
                      created=launched.created, owner=owner)
    except (StudyFileError, StimulusSetError, PlanError, ValueError) as exc:
        _fail(str(exc))
    what = "created" if launched.created else "unchanged, still"
    click.echo(
        f"study {launched.slug}: {what} version {launched.version} "
        f"({launched.n_cells} assignment cells)"
    )
    click.echo("participant URL (paste into Prolific):")
    click.echo("  " + participant_url(base_url, launched.slug))


@study.command("state")
@click.argument("slug")
@click.argument("state", required=False, type=click.Choice(STUDY_STATES))
@db_option
def study_state(slug: str, state: str | None, database_url: str | None) -> None:
    """Show or set whether a study lets new participants in (open, full, paused, closed);
    those already inside may always finish."""
    app = _app(database_url)
    with app.app_context():
        db_session = get_db()
        with db_session.begin():
            row = db_session.scalar(select(Study).where(Study.slug == slug))
            if row is None:
                _fail(f"no study {slug!r}")
            if state is not None:
                set_study_state(db_session, row, state, "cli")
            shown = row.state
    click.echo(f"study {slug}: {shown}")


@main.group()
def admin() -> None:
    """Researcher accounts."""


@admin.command("create-user")
@click.argument("username")
@click.password_option(envvar="ASSAY_NEW_PASSWORD")
@click.option("--admin", "is_admin", is_flag=True, help="An admin sees and manages every study.")
@db_option
def admin_create_user(username: str, password: str, is_admin: bool,
                      database_url: str | None) -> None:
    """Create a researcher who can log in to the dashboard."""
    app = _app(database_url)
    with app.app_context():
        db_session = get_db()
        try:
            with db_session.begin():
                create_researcher(db_session, username, password, is_admin=is_admin)
        except ValueError as exc:
            _fail(str(exc))
    click.echo(f"created {'admin' if is_admin else 'researcher'} {username}")


@admin.command("purge-ids")
@click.option("--days", type=int, envvar="ASSAY_PURGE_DAYS", default=30, show_default=True,
              help="Purge the platform IDs of studies closed at least this many days ago "
              "(env ASSAY_PURGE_DAYS).")
@db_option
def admin_purge_ids(days: int, database_url: str | None) -> None:
    """Delete participants' platform IDs once their study has been closed long enough (run
    daily, e.g. from cron); pseudonymous keys and responses stay."""
    app = _app(database_url)
    with app.app_context():
        db_session = get_db()
        with db_session.begin():
            purged = purge_platform_ids(db_session, days, "cli")
    click.echo(f"purged {purged} platform ID(s) of studies closed {days}+ days ago")


def _amount(ctx, param, value: str | None) -> Decimal | None:
    try:
        return None if value is None else per_correct_amount(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("prolific")
@click.argument("slug")
@click.option("--list", "which", required=True, type=click.Choice([*sorted(LISTS), "bonus"]),
              help="approve: completed; return: screened out, declined or withdrawn; bonus: "
              "completed, with their bonus.")
@click.option("--bonus-per-correct", callback=_amount, metavar="AMOUNT",
              help="Bonus per correct main trial (default: the study file's "
              "recruitment.bonus_per_correct).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@db_option
def prolific_cmd(slug: str, which: str, bonus_per_correct: Decimal | None, out: Path,
                 database_url: str | None) -> None:
    """Platform IDs by status, as a CSV for Prolific's bulk approve / return / bonus tools
    (personal data: keep the file only as long as the bulk action needs it)."""
    if bonus_per_correct is not None and which != "bonus":
        _fail("--bonus-per-correct goes with --list bonus")
    app = _reader_app(database_url)
    with app.app_context():
        try:
            if which == "bonus":
                rows = bonuses(get_db(), slug, bonus_per_correct)
                text, summary = bonus_csv(rows), f"{sum(a for _, a in rows):.2f} in total"
            else:
                rows = platform_ids(get_db(), slug, which)
                text, summary = ids_csv(rows), which
        except ValueError as exc:
            _fail(str(exc))
    app.extensions["assay.engine"].dispose()
    out.write_text(text)
    click.echo(f"wrote {len(rows)} participant ID(s) to {out} ({summary})")


@admin.command("add-member")
@click.argument("slug")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), default="collaborator", show_default=True,
              help="owner: everything; collaborator: also pause, resume, close; viewer: "
              "progress and data only.")
@db_option
def admin_add_member(slug: str, username: str, role: str, database_url: str | None) -> None:
    """Give a researcher a role on a study."""
    app = _app(database_url)
    with app.app_context():
        db_session = get_db()
        try:
            with db_session.begin():
                add_member(db_session, slug, username, role)
                study_row = db_session.scalar(select(Study).where(Study.slug == slug))
                audit(db_session, "cli", "add_member", study_row, username=username, role=role)
        except ValueError as exc:
            _fail(str(exc))
    click.echo(f"{username} is now {role} of {slug}")


@main.command("export")
@click.argument("slug")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="A CSV or Parquet file.")
@click.option("--psych-ds", "psych_ds", type=click.Path(file_okay=False, path_type=Path),
              help="Write a psych-DS dataset folder here instead (or as well).")
@click.option("--include-preview", is_flag=True, help="Also export preview sessions.")
@db_option
def export(slug: str, out: Path | None, psych_ds: Path | None, include_preview: bool,
           database_url: str | None) -> None:
    """Write tidy trial-level data (CSV, Parquet for a .parquet file name, psych-DS)."""
    if out is None and psych_ds is None:
        _fail("give --out FILE, --psych-ds DIR, or both")
    app = _reader_app(database_url)
    with app.app_context():
        db = get_db()
        frame = trial_rows(db, slug, include_preview=include_preview)
        found = launched_spec(db, slug)  # read only: dashboard downloads are audited
    app.extensions["assay.engine"].dispose()
    written = []
    try:
        if out is not None:
            write_export(frame, out)
            written.append(str(out))
        if psych_ds is not None:
            title = found[0].title if found else slug
            write_psych_ds(frame, psych_ds, slug=slug, title=title,
                           description=describe_study(slug, title))
            written.append(f"{psych_ds} (psych-DS)")
    except ValueError as exc:
        _fail(str(exc))
    click.echo(f"wrote {len(frame)} trials of {frame['participant'].nunique()} participants "
               f"to {' and '.join(written)}")


@main.command("simulate")
@click.argument("slug")
@click.option("--participants", "-n", default=10, show_default=True)
@click.option("--url", required=True, help="Base URL of a running server.")
@click.option("--workers", default=8, show_default=True)
@click.option("--seed", default=0, show_default=True)
def simulate_cmd(slug: str, participants: int, url: str, workers: int, seed: int) -> None:
    """Drive N simulated participants through a running server's HTTP API."""
    try:
        results = simulate(url, slug, participants, workers=workers, seed=seed)
    except (SimulationError, OSError) as exc:
        _fail(str(exc))
    done = sum(r.status == "completed" for r in results)
    click.echo(
        f"{len(results)} participants: {done} completed, "
        f"{len(results) - done} screened out; {sum(r.trials_sent for r in results)} trials"
    )


@main.command("glmm")
@click.argument("formula")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--family", type=click.Choice(["binomial", "gaussian"]), default="binomial")
@click.option("--link", type=click.Choice(["logit", "probit"]), default="logit")
@click.option("--factor", "factors", multiple=True, help="Treat this numeric column as a factor.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
def glmm_cmd(
    formula: str, data_path: Path, family: str, link: str, factors: tuple[str, ...], as_json: bool
) -> None:
    """Fit a mixed model (lme4 formula syntax) on a CSV file, as R's glmer/lmer would."""
    try:
        data = pd.read_csv(data_path)
    except (OSError, pd.errors.ParserError) as exc:
        _fail(f"{data_path}: cannot read CSV ({exc})")
    missing = [f for f in factors if f not in data.columns]
    if missing:
        _fail(f"--factor {missing[0]!r} is not a column of {data_path}")
    for name in factors:
        data[name] = data[name].astype(str)
    try:
        if family == "gaussian":
            result = lmm(formula, data)
        else:
            result = glmm(formula, data, family=family, link=link)
    except ValueError as exc:
        _fail(str(exc))
    click.echo(json.dumps(result.to_dict()) if as_json else result.summary())


@main.command("power")
@click.argument("study_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--effect", "effects", multiple=True, metavar="CONDITION=LOG_ODDS",
              help="Assumed log-odds difference of a condition from the first (reference) "
              "one; repeat for more.")
@click.option("--intercept", type=float, default=1.0, show_default=True,
              help="Log-odds of a correct answer in the reference condition.")
@click.option("--sd-participant", type=float, default=0.5, show_default=True)
@click.option("--sd-unit", type=float, default=0.5, show_default=True)
@click.option("--exclusion-rate", type=float, default=0.0, show_default=True,
              help="Share of participants the exclusion rules are expected to remove.")
@click.option("--participants", default="20,40,80,160", show_default=True,
              help="Participant numbers (all conditions together), comma-separated.")
@click.option("--units", type=int, help="Units shown (default: the study's stimulus set's).")
@click.option("--sims", default=200, show_default=True, help="Simulations per number.")
@click.option("--alpha", default=0.05, show_default=True)
@click.option("--one-sided", is_flag=True, help="Test a positive effect only.")
@click.option("--workers", type=int, help="Processes (default: every core).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write power.csv and power.png here.")
def power_cmd(study_file: Path, effects: tuple[str, ...], intercept: float,
              sd_participant: float, sd_unit: float, exclusion_rate: float,
              participants: str, units: int | None, sims: int, alpha: float,
              one_sided: bool, workers: int | None, seed: int, out_dir: Path | None) -> None:
    """Power of the study's confirmatory GLMM by simulation, across participant numbers."""
    try:
        spec = load_study(study_file)
    except StudyFileError as exc:
        _fail(str(exc))
    conditions = tuple(c.name for c in spec.conditions)
    assumed = {}
    for text in effects:
        name, _, value = text.partition("=")
        try:
            assumed[name] = float(value)
        except ValueError:
            _fail(f"--effect {text!r}: expected CONDITION=LOG_ODDS, e.g. "
                  f"{conditions[-1]}=0.5")
    if units is None:
        manifest = stimulus_dir(spec, study_file) / "manifest.json"
        if not manifest.exists():
            _fail(f"no stimulus set at {manifest.parent}: give --units")
        units = len(json.loads(manifest.read_text())["entries"])
    try:
        numbers = [int(n) for n in participants.split(",")]
        design = PowerDesign(conditions=conditions, effects=assumed, intercept=intercept,
                             trials=spec.trials.main, units=units,
                             sd_participant=sd_participant, sd_unit=sd_unit,
                             exclusion_rate=exclusion_rate)
    except ValueError as exc:
        _fail(str(exc))
    term = None
    if spec.analysis is not None:  # the pre-registered test, when the study states one
        term, alpha = spec.analysis.term, spec.analysis.alpha
        one_sided = spec.analysis.alternative == "greater"
        if spec.analysis.formula.replace(" ", "") != FORMULA.replace(" ", ""):
            click.echo(f"note: simulating {FORMULA}, not the study's {spec.analysis.formula}")
    try:
        curve = power_curve(design, numbers, n_sims=sims, alpha=alpha, one_sided=one_sided,
                            term=term, seed=seed, workers=workers)
    except KeyError as exc:
        _fail(f"the confirmatory term {exc} is not a coefficient of {FORMULA}")
    click.echo(f"{FORMULA}, test of {term or 'condition' + conditions[1]} at alpha {alpha}"
               f"{' (one-sided)' if one_sided else ''}; {sims} simulations per number")
    click.echo(curve.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        curve.to_csv(out_dir / "power.csv", index=False)
        power_plot(curve).savefig(out_dir / "power.png", dpi=120)
        click.echo(f"wrote {out_dir / 'power.csv'} and {out_dir / 'power.png'}")


@main.command("report")
@click.argument("slug")
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An export file (CSV or Parquet) instead of the database.",
)
@click.option(
    "--study-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the exclusion rules from this study file instead of the launched version.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default report-SLUG).",
)
@click.option("--include-preview", is_flag=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--n-boot", default=2000, show_default=True, help="Bootstrap resamples.")
@db_option
def report(
    slug: str,
    data_path: Path | None,
    study_file: Path | None,
    out_dir: Path | None,
    include_preview: bool,
    seed: int,
    n_boot: int,
    database_url: str | None,
) -> None:
    """Write the HTML report (plots, exclusions, mixed models) and tidy result CSVs.

    The exclusion rules are those of the study's newest launched version (from the
    database), unless --study-file names a study file; the report says which ran."""
    try:
        spec, rules_note, launched = None, "", None
        if study_file is not None:
            spec = load_study(study_file)
            rules_note = f"exclusion rules from {study_file.name}"
        if data_path is None:
            app = _reader_app(database_url)
            with app.app_context():
                frame = trial_rows(get_db(), slug, include_preview=include_preview)
                launched = launched_spec(get_db(), slug)
            app.extensions["assay.engine"].dispose()
            if launched is None:
                _fail(f"no study {slug!r} in the database")
            trials, source = tidy(frame), "study database"
        else:
            trials, source = read_trials(data_path), f"export file {data_path.name}"
            if spec is None:
                launched = _launched_if_reachable(database_url, slug)
        if spec is None and launched is not None:
            spec, version = launched
            rules_note = f"exclusion rules of launched version {version}"
        path = report_command(slug, trials, spec=spec, rules_note=rules_note, source=source,
                              out_dir=out_dir, seed=seed, n_boot=n_boot)
    except (ValueError, StudyFileError, OSError) as exc:
        _fail(str(exc))
    click.echo(rules_note or "no exclusion rules found (no launched version in the database, "
               "no --study-file): only incomplete sessions are excluded")
    click.echo(f"wrote {path}")


def _launched_if_reachable(database_url: str | None, slug: str) -> tuple[StudySpec, int] | None:
    """The launched spec when the database is there and at the newest schema, else None."""
    url = database_url or load_config()["DATABASE_URL"]
    try:
        check_at_head(url)
    except SchemaError:
        return None
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        launched = launched_spec(get_db(), slug)
    app.extensions["assay.engine"].dispose()
    return launched


@main.command("serve")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--production", is_flag=True,
              help="The production server (granian), set up by ASSAY_* variables: see "
              "deploy/README.md (ASSAY_BIND, not --host and --port).")
def serve(database_url: str | None, host: str, port: int, production: bool) -> None:
    """Serve participants and researchers: a development server, or with --production the
    server to deploy."""
    if production:
        from server.serve import serve as serve_production

        if database_url:  # the workers read it from the environment they inherit
            os.environ["DATABASE_URL"] = database_url
        try:
            serve_production()
        except ValueError as exc:  # a bad ASSAY_* setting, found before anything starts
            raise click.UsageError(str(exc)) from None
        return
    _app(database_url).run(host=host, port=port, threaded=True)


def demo_studies() -> dict[str, Path]:
    """The bundled demo studies, one study file each in experiments/demos/, by name."""
    return {path.stem: path for path in sorted(DEMOS.glob("*.toml"))}


def demo_build(study_name: str) -> Path:
    """The build configuration of a demo study's stimuli: its own (experiments/demos/builds/
    <study>.toml) when it needs methods or sources the default build lacks, else the
    default."""
    own = DEMO_BUILDS / f"{study_name}.toml"
    return own if own.is_file() else DEMO_BUILD


@main.command("demo")
@click.option("--study", "study_name", default="2afc", show_default=True,
              help="Which bundled demo study (see --list).")
@click.option("--list", "list_only", is_flag=True, help="Name the demo studies and exit.")
@click.option(
    "--workdir",
    default=".assay/demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--simulate", "n_simulated", default=0, help="Simulated participants to run.")
@click.option("--no-serve", is_flag=True, help="Exit after the simulation instead of serving.")
@click.option("--port", default=5000, show_default=True)
@click.option(
    "--stimuli",
    "stimuli_source",
    type=click.Choice(["model", "procedural"]),
    default="model",
    show_default=True,
    help="Build the stimuli from the demo CNN, or draw the quick procedural set.",
)
@click.option(
    "--build-config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --stimuli model: the build configuration (default: the study's own, "
    "experiments/demos/builds/STUDY.toml, else stimuli/configs/demo-build.toml).",
)
def demo(
    study_name: str,
    list_only: bool,
    workdir: Path,
    n_simulated: int,
    no_serve: bool,
    port: int,
    stimuli_source: str,
    build_config: Path | None,
) -> None:
    """Build a demo study's stimuli, launch it on SQLite and serve it; with --simulate N
    --no-serve, run it headless to an export and a report."""
    demos = demo_studies()
    if list_only:
        for name, path in demos.items():
            spec = load_study(path)
            click.echo(f"{name:17s} {spec.paradigm.id:21s} {spec.title}")
        return
    if study_name not in demos:
        _fail(f"no demo study {study_name!r} (demo studies: {', '.join(demos)})")
    workdir.mkdir(parents=True, exist_ok=True)
    if stimuli_source == "model":
        from stimuli.build import build_stimuli  # torch takes seconds to import: only here

        build_config = build_config or demo_build(study_name)
        click.echo(f"building the demo stimuli from {build_config} (first run trains the CNN)")
        try:
            build_stimuli(build_config, output=workdir / "stimuli")
        except (ValueError, StimulusSetError) as exc:
            _fail(str(exc))
    else:
        build_procedural_set(workdir / "stimuli")
    study_file = workdir / f"{study_name}.toml"
    shutil.copyfile(demos[study_name], study_file)
    spec = load_study(study_file)
    url_db = f"sqlite:///{(workdir / 'assay.db').resolve()}"
    app = _app(url_db, INSTANCE_DIR=workdir, ENTRY_RATE_LIMIT="1000 per minute")
    try:
        with app.app_context():
            db_session = get_db()
            with db_session.begin():
                launched = launch_study(db_session, spec, study_file)
                with contextlib.suppress(ValueError):  # made by an earlier run
                    create_researcher(db_session, *DEMO_USER)
                add_member(db_session, launched.slug, DEMO_USER[0], "owner")
    except (PlanError, StimulusSetError) as exc:
        _fail(str(exc))
    click.echo(f"demo study {launched.slug} version {launched.version}, database {url_db}")
    with serving(app, port=0 if no_serve else port) as base:
        click.echo(
            f"participant URL: {base}/s/{launched.slug}?PROLIFIC_PID=demo1"
            "&STUDY_ID=demo&SESSION_ID=demo"
        )
        click.echo(f"preview URL:     {base}/s/{launched.slug}")
        click.echo(f"dashboard:       {base}/dashboard  (login {DEMO_USER[0]} / {DEMO_USER[1]})")
        if n_simulated:
            results = simulate(base, launched.slug, n_simulated, prefix=f"DEMO{os.getpid()}x")
            done = sum(r.status == "completed" for r in results)
            click.echo(f"simulated {len(results)} participants: {done} completed")
            with app.app_context():
                frame = trial_rows(get_db(), launched.slug)
                launched_now = launched_spec(get_db(), launched.slug)
            export_path = workdir / f"{study_name}-trials.csv"
            write_export(frame, export_path)
            click.echo(f"exported {len(frame)} trials to {export_path}")
            rules, version = launched_now
            path = report_command(
                launched.slug, tidy(frame), spec=rules, source="study database",
                rules_note=f"exclusion rules of launched version {version}",
                out_dir=workdir / f"{study_name}-report",
            )
            click.echo(f"report: {path}")
        if not no_serve:
            click.echo("serving; press Ctrl+C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()


@main.command("paradigms")
def paradigms_cmd() -> None:
    """The paradigm registry: id, revision, what it is (one line each)."""
    for pid, paradigm in PARADIGMS.items():
        click.echo(f"{pid:21s} r{paradigm.revision}  {paradigm.description}")


@main.command("methods")
def methods_cmd() -> None:
    """The registries of explanation methods, unit sources and models (one line each)."""
    from stimuli.registry import METHODS, MODELS, SOURCES, load_plugins  # imports torch

    load_plugins()
    width = max(map(len, [*METHODS, *SOURCES, *MODELS]))
    click.echo("explanation methods (*: not of units; built by their own kind of build file):")
    for mid, method in METHODS.items():
        mark = " " if method.explains_units else "*"
        click.echo(f"  {mid:{width}s} r{method.revision}{mark} {method.description}")
    click.echo("unit sources:")
    for sid, source in SOURCES.items():
        click.echo(f"  {sid:{width}s} r{source.revision}  {source.description}")
    click.echo("models:")
    for name, loader in MODELS.items():
        click.echo(f"  {name:{width}s}     {loader.description}")


if __name__ == "__main__":
    main()
