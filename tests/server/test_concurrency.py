"""Many participants at the same moment against a real server.

PostgreSQL behind the production server (granian: three worker processes, each with threads),
and SQLite behind the threaded dev server: 200 participants hit the entry URL together and end
up balanced across the condition cells within 1; a platform ID sent twice at once gets one
session; trials sent twice at once are stored once. The counts come from the database, not
from the answers.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select

from server.app import create_app
from server.catalog import launch_study
from server.db import make_engine
from server.devserver import serving
from server.extensions import get_db
from server.models import ParticipantSession, PlatformIdentity, Study, StudyVersion, TrialResponse
from server.server_process import RunningServer, local_env, running_server
from server.tokens import HEADER
from tests.conftest import app_config, demo_spec, fresh_database

REDIS_URL = os.environ.get("ASSAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
TOKEN = re.compile(r'data-token="([^"]+)"')

N_PARTICIPANTS = 200
N_TWINS = 20  # platform IDs that arrive twice at the same moment
N_SENDERS = 24  # participants who go on to send trials; half send each one twice at once
TRIALS_EACH = 6


# --- servers --------------------------------------------------------------------------------


@contextmanager
def app_server(database_url: str, tmp: Path, *, workers: int = 4, threads: int = 2,
               **env: str) -> Iterator[RunningServer]:
    """``assay serve --production`` (granian) on a free loopback port, over plain HTTP (so
    cookies are not HTTPS-only). Yields once every worker has built its app."""
    environment = local_env(database_url, tmp / "instance", workers=workers, threads=threads,
                            **env)
    with running_server(environment, tmp / "server.log") as server:
        yield server


def _launch(database_url: str, tmp: Path, stimulus_dir: Path, target: int | None = None) -> str:
    slug = "c-" + secrets.token_hex(4)
    app = create_app(app_config(database_url, tmp))
    try:
        with app.app_context():
            db = get_db()
            with db.begin():
                spec = demo_spec(slug, stimulus_set=stimulus_dir.name,
                                 recruitment={"target_per_condition": target})
                launch_study(db, spec, stimulus_dir.parent / "study.toml")
    finally:
        app.extensions["assay.engine"].dispose()
    return slug


# --- participants ---------------------------------------------------------------------------


def _all_at_once(fn: Callable, jobs: list) -> list:
    """Run ``fn(job)`` for every job, each in its own thread, released by one barrier."""
    barrier = threading.Barrier(len(jobs))

    def run(job):
        with requests.Session() as http:
            barrier.wait(timeout=60)
            return fn(http, job)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


def _enter(base: str, slug: str) -> Callable:
    def enter(http: requests.Session, pid: str) -> tuple[int, str | None]:
        params = {"PROLIFIC_PID": pid, "STUDY_ID": "CONCURRENCY", "SESSION_ID": "S" + pid}
        page = http.get(f"{base}/s/{slug}", params=params, timeout=60)
        match = TOKEN.search(page.text)
        return page.status_code, match.group(1) if match else None

    return enter


def _begin(base: str, token: str) -> list[int]:
    """Consent and instructions; returns the first main trials' indices."""
    with requests.Session() as http:
        http.headers[HEADER] = token
        for path, body in (("consent", {"agree": True}), ("instructions", {"seconds": 30.0})):
            assert http.post(f"{base}/api/{path}", json=body, timeout=60).status_code == 200
        state = http.get(f"{base}/api/state", timeout=60).json()
    return [t["index"] for t in state["trials"] if t["phase"] == "main"][:TRIALS_EACH]


def _send_trial(base: str) -> Callable:
    def send(http: requests.Session, job: tuple[str, int, int]) -> tuple[int, dict]:
        token, index, _copy = job
        shown = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index)
        rt = 700.0 + index
        body = {
            "trial_index": index,
            "answer": {"choice": "ab"[index % 2], "confidence": 1 + index % 3},
            "rt_ms": rt,
            "presented_at": shown.isoformat(),
            "responded_at": (shown + timedelta(milliseconds=rt)).isoformat(),
        }
        response = http.post(f"{base}/api/trials", json=body, headers={HEADER: token}, timeout=60)
        return response.status_code, response.json()

    return send


def _run_crowd(base: str, database_url: str, slug: str) -> list[str]:
    """The whole scenario with its assertions; returns the platform IDs used."""
    pids = [f"CONC{secrets.token_hex(6).upper()}" for _ in range(N_PARTICIPANTS)]
    arrivals = pids + pids[:N_TWINS]  # the twins arrive twice, at the same moment
    entered = _all_at_once(_enter(base, slug), arrivals)

    assert [status for status, _ in entered] == [200] * len(arrivals)
    tokens = [token for _, token in entered]
    assert None not in tokens
    by_pid: dict[str, set[str]] = {}
    for pid, token in zip(arrivals, tokens, strict=True):
        by_pid.setdefault(pid, set()).add(token)
    assert {pid: len(t) for pid, t in by_pid.items() if len(t) != 1} == {}, "a PID got 2 sessions"
    assert len(set(tokens)) == N_PARTICIPANTS

    senders = tokens[N_TWINS : N_TWINS + N_SENDERS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        indices = list(pool.map(lambda t: _begin(base, t), senders))
    jobs = [
        (token, index, copy)
        for n, (token, planned) in enumerate(zip(senders, indices, strict=True))
        for index in planned
        for copy in range(2 if n % 2 == 0 else 1)  # every other sender sends each trial twice
    ]
    sent = _all_at_once(_send_trial(base), jobs)

    assert [status for status, _ in sent] == [200] * len(jobs), sent
    fresh = Counter(
        (job[0], job[1]) for job, (_, body) in zip(jobs, sent, strict=True) if not body["duplicate"]
    )
    distinct = {(job[0], job[1]) for job in jobs}
    assert fresh == Counter(distinct), "each trial is acknowledged as new exactly once"

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            study = select(Study.id).where(Study.slug == slug).scalar_subquery()
            per_cell = dict(
                conn.execute(
                    select(ParticipantSession.cell, func.count())
                    .where(ParticipantSession.study_id == study)
                    .group_by(ParticipantSession.cell)
                ).all()
            )
            cells = conn.scalar(select(StudyVersion.cells).where(StudyVersion.study_id == study))
            n_identities = conn.scalar(
                select(func.count(func.distinct(PlatformIdentity.platform_pid))).where(
                    PlatformIdentity.study_id == study
                )
            )
            trial_rows = conn.execute(
                select(ParticipantSession.public_id, TrialResponse.trial_index, func.count())
                .join(ParticipantSession, TrialResponse.session_id == ParticipantSession.id)
                .where(ParticipantSession.study_id == study)
                .group_by(ParticipantSession.public_id, TrialResponse.trial_index)
            ).all()
    finally:
        engine.dispose()

    assert len(per_cell) == len(cells) == 4, per_cell
    assert sum(per_cell.values()) == N_PARTICIPANTS, "one session per platform ID"
    assert max(per_cell.values()) - min(per_cell.values()) <= 1, per_cell
    per_condition = Counter()
    for cell, n in per_cell.items():
        per_condition[cell.split("|")[0]] += n
    assert max(per_condition.values()) - min(per_condition.values()) <= 1, per_condition
    assert n_identities == N_PARTICIPANTS
    assert [row for row in trial_rows if row[2] != 1] == [], "a trial stored twice"
    assert len(trial_rows) == len(distinct) == N_SENDERS * TRIALS_EACH
    return pids


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory) -> Iterator[str]:
    yield from fresh_database("postgres", tmp_path_factory.mktemp("pg"))


@pytest.mark.postgres
@pytest.mark.slow
def test_crowd_on_postgres_behind_the_production_server(postgres_url, stimulus_dir, tmp_path):
    slug = _launch(postgres_url, tmp_path, stimulus_dir)
    with app_server(postgres_url, tmp_path, workers=3, threads=2) as server:
        pids = _run_crowd(server.base_url, postgres_url, slug)
        # %0a and %00 decode to a newline and a NUL: neither may forge a line nor reach the log
        forged = requests.get(server.base_url + "/s/x%0a127.0.0.1%20%22GET%20/forged%20HTTP/1.1"
                              "%22%20200%00?PROLIFIC_PID=LEAKED1", timeout=10)
        time.sleep(0.2)  # let the last access-log lines reach the file
        log = server.log_text()
    assert forged.status_code == 404
    assert f'GET /s/{slug} HTTP/1.1" 200' in log, "the access log records entries"
    assert '\\x0a127.0.0.1 "GET /forged' in log and "\x00" not in log
    assert not any(line.startswith('127.0.0.1 "GET /forged') for line in log.splitlines())
    assert "LEAKED1" not in log
    assert "PROLIFIC_PID" not in log
    leaked = [pid for pid in pids if pid in log]
    assert leaked == [], "platform IDs are personal data and must not be logged"
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]


@pytest.mark.slow
def test_crowd_on_sqlite_behind_the_dev_server(stimulus_dir, tmp_path):
    url = next(fresh_database("sqlite", tmp_path))
    slug = _launch(url, tmp_path, stimulus_dir)
    app = create_app(app_config(url, tmp_path))
    try:
        with serving(app) as base:
            _run_crowd(base, url, slug)
    finally:
        app.extensions["assay.engine"].dispose()


def _redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return client


@pytest.mark.postgres
@pytest.mark.slow
def test_entry_rate_limit_is_shared_by_workers_through_redis(postgres_url, stimulus_dir, tmp_path):
    client = _redis_or_skip()
    slug = _launch(postgres_url, tmp_path, stimulus_dir)
    # A window no other run uses, so that counters left in Redis by another run cannot count.
    window = 100_000 + secrets.randbelow(800_000)
    limit = f"5 per {window} second"
    try:
        with app_server(
            postgres_url,
            tmp_path,
            workers=2,
            threads=2,
            REDIS_URL=REDIS_URL,
            ASSAY_ENTRY_RATE_LIMIT=limit,
        ) as server:
            pids = [f"RL{secrets.token_hex(6).upper()}" for _ in range(30)]
            entered = _all_at_once(_enter(server.base_url, slug), pids)
            time.sleep(0.2)
            log = server.log_text()
    finally:
        for key in client.scan_iter(match=f"*/5/{window}/second*"):
            client.delete(key)
        client.close()
    assert sorted(status for status, _ in entered) == [200] * 5 + [429] * 25
    entry_lines = [line for line in log.splitlines() if f"GET /s/{slug} " in line]
    served_by = {line.rsplit(" ", 1)[-1] for line in entry_lines}
    assert len(served_by) >= 2, f"all entries went to one worker, proving nothing: {served_by}"


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_crowd_fills_a_study_exactly_to_its_target(kind, stimulus_dir, tmp_path):
    """30 people arrive at once for 2 x 8 places: 16 get in, 8 per condition; the others
    see the study is full, and it says so."""
    for url in fresh_database(kind, tmp_path):
        slug = _launch(url, tmp_path, stimulus_dir, target=8)
        app = create_app(app_config(url, tmp_path))
        try:
            with serving(app) as base:
                pids = [f"FULL{secrets.token_hex(5)}" for _ in range(30)]
                entered = _all_at_once(_enter(base, slug), pids)
        finally:
            app.extensions["assay.engine"].dispose()
        tokens = [token for status, token in entered if status == 200 and token]
        assert len(tokens) == 16
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(ParticipantSession.condition, func.count())
                    .join(Study, ParticipantSession.study_id == Study.id)
                    .where(Study.slug == slug).group_by(ParticipantSession.condition)
                ).all()
                state = conn.scalar(select(Study.state).where(Study.slug == slug))
        finally:
            engine.dispose()
        assert dict(rows) == {"neurons": 8, "dictionary": 8} and state == "full"
