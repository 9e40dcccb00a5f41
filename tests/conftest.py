"""Shared fixtures: a fresh database per module (SQLite and PostgreSQL), the app, a client,
the procedural stimulus set, and a factory for launched studies."""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from experiments.study import StudySpec
from server.app import create_app
from server.catalog import launch_study
from server.extensions import get_db
from server.migrate import libpq_dsn, scratch_database, upgrade
from stimuli.procedural import build_procedural_set
from tests.experiments.decision_set import build_decision_set
from tests.experiments.drawing_set import build_drawing_set

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "ASSAY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHARED = Path(os.environ.get("ASSAY_SHARED", ROOT.parent / "shared"))


def postgres_available() -> str | None:
    """None if PostgreSQL answers, else the reason (CI must have it: there a miss fails)."""
    try:
        with psycopg.connect(libpq_dsn(POSTGRES_URL), connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}"


def fresh_database(kind: str, tmp_dir: Path, revision: str = "head") -> Iterator[str]:
    """A new database migrated to ``revision``; dropped afterwards (PostgreSQL) or left in
    tmp (SQLite)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_dir / 'assay.db'}"
        upgrade(url, revision)
        yield url
        return
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    with scratch_database(POSTGRES_URL, prefix="assay_test_", revision=revision) as url:
        yield url


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request, tmp_path_factory) -> Iterator[str]:
    yield from fresh_database(request.param, tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="session")
def stimulus_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("stimuli") / "procedural"
    build_procedural_set(directory, seed=0)
    return directory


@pytest.fixture(scope="session")
def drawing_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("drawings") / "drawings"
    build_drawing_set(directory)
    return directory


@pytest.fixture(scope="session")
def decision_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("decisions") / "decisions"
    build_decision_set(directory)
    return directory


@pytest.fixture(scope="session")
def stimuli_for(stimulus_dir, drawing_dir, decision_dir) -> Callable[..., Path]:
    """The test stimulus set a paradigm reads, by the entries it shows: units (the
    procedural set), drawing categories, or a model's decisions."""
    sets = {"unit": stimulus_dir, "category": drawing_dir, "decision": decision_dir}
    return lambda paradigm: sets[paradigm.entry_type]


def app_config(database_url: str, tmp_path: Path) -> dict:
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-" + secrets.token_hex(8),
        "INSTANCE_DIR": tmp_path,
        "TESTING": True,
        "ENTRY_RATE_LIMIT": "10000 per minute",
    }


@pytest.fixture
def app(database_url, tmp_path):
    app = create_app(app_config(database_url, tmp_path))
    yield app
    app.extensions["assay.engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def demo_spec(slug: str, **overrides) -> StudySpec:
    """The demo study with a fresh slug and top-level sections updated from ``overrides``."""
    data = tomllib.loads((ROOT / "experiments" / "demos" / "2afc.toml").read_text())
    data["slug"] = slug
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return StudySpec.model_validate(data)


@pytest.fixture
def launch(app, stimulus_dir) -> Callable[..., str]:
    """Launch a study on the procedural set; returns its slug (unique per call)."""

    def _launch(slug: str | None = None, **overrides) -> str:
        slug = slug or "t-" + secrets.token_hex(4)
        spec = demo_spec(slug, stimulus_set=stimulus_dir.name, **overrides)
        with app.app_context():
            db = get_db()
            with db.begin():
                launch_study(db, spec, stimulus_dir.parent / "study.toml")
        return slug

    return _launch
