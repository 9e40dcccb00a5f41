"""Faults under load, against the production server (granian): a worker killed with SIGKILL,
PostgreSQL restarted, Redis stopped. Simulated participants (which retry as the browser's outbox
does) all finish, and the database holds every trial of their plans exactly once.

The restart and the stop hit a throwaway PostgreSQL cluster (initdb on a free port) and a
private redis-server, never the machine's shared servers that the rest of the suite uses.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.db import make_engine
from server.migrate import upgrade
from server.models import ParticipantSession, Study, TrialResponse
from server.server_process import APP_READY, free_port
from server.simulate import SimResult, simulate
from tests.conftest import fresh_database
from tests.server.test_concurrency import _launch, app_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
N = 8


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Cluster:
    """A throwaway PostgreSQL cluster (trust auth, no fsync) that tests may restart."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found and not shutil.which("initdb"):
            if os.environ.get("CI"):
                raise RuntimeError("initdb not found: install postgresql")
            pytest.skip("initdb not found")
        self.bin = Path(found[-1]).parent if found else Path(shutil.which("initdb")).parent
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix="assay-pg-"))
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:  # initdb refuses to run as root
            shutil.chown(self.data, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_postgres, str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.data / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def throwaway_postgres() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.start()
        upgrade(cluster.url)
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait()


def in_background(base: str, slug: str) -> tuple[threading.Thread, list]:
    """N simulated participants, two at a time, in a thread; the list gets their results."""
    results: list = []

    def run() -> None:
        try:
            results.extend(simulate(base, slug, N, workers=2, seed=7, prefix="FAULT"))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def stored_trials(url: str, slug: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sessions = select(ParticipantSession.id).join(Study).where(Study.slug == slug)
            return conn.scalar(select(func.count()).select_from(TrialResponse).where(
                TrialResponse.session_id.in_(sessions)))
    finally:
        engine.dispose()


def wait_until_stored(url: str, slug: str, at_least: int, timeout: float = 60) -> None:
    """Until the run is under way: faults injected before any trial prove little."""
    deadline = time.monotonic() + timeout
    while stored_trials(url, slug) < at_least:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {at_least} trials stored after {timeout} s")
        time.sleep(0.05)


def check_everything_stored(results: list, url: str, slug: str) -> None:
    assert len(results) == N and all(isinstance(r, SimResult) for r in results), results
    assert {r.status for r in results} <= {"completed", "screened_out"}, results  # finished
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(ParticipantSession.plan, func.count(TrialResponse.id),
                       func.count(func.distinct(TrialResponse.trial_index)))
                .join(Study).join(TrialResponse)
                .where(Study.slug == slug).group_by(ParticipantSession.id)).all()
    finally:
        engine.dispose()
    assert len(rows) == N
    for plan, stored, distinct in rows:
        main = sum(t["kind"] != "practice" for t in plan)
        assert stored == distinct, "a trial stored twice"
        assert distinct >= main, "a trial lost"


@pytest.fixture
def url(tmp_path) -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (for faults that leave it running)."""
    yield from fresh_database("postgres", tmp_path)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(url, tmp_path, stimulus_dir):
    slug = _launch(url, tmp_path, stimulus_dir)
    with app_server(url, tmp_path, workers=2, threads=2) as server:
        thread, results = in_background(server.base_url, slug)
        wait_until_stored(url, slug, 10)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        thread.join(timeout=240)
        log = server.log_text()
        workers = server.worker_pids()
    check_everything_stored(results, url, slug)
    # the dead worker was replaced by one that built the app and served
    assert "Respawning worker-1" in log and len(workers) == 3 and victim not in workers[1:]
    assert log.count(APP_READY) == 3
    assert any(line.endswith(f" {workers[2]}") and "POST /api/trials" in line
               for line in log.splitlines()), "the new worker served trials"


def test_a_postgres_restart_mid_run_loses_and_duplicates_nothing(tmp_path, stimulus_dir):
    with throwaway_postgres() as cluster:
        slug = _launch(cluster.url, tmp_path, stimulus_dir)
        with app_server(cluster.url, tmp_path, workers=2, threads=2) as server:
            thread, results = in_background(server.base_url, slug)
            wait_until_stored(cluster.url, slug, 10)
            cluster.stop("fast")
            time.sleep(3)  # an outage: every request in it gets a 503 and is retried
            cluster.start()
            thread.join(timeout=240)
            log = server.log_text()
        check_everything_stored(results, cluster.url, slug)
    assert "database unavailable" in log  # the outage was seen, and answered with 503s
    errors = [line for line in log.splitlines() if '" 500 ' in line or "unhandled" in line]
    assert not errors, errors[:5]  # a lost connection is an outage (503), never a 500


def test_redis_stopped_mid_run_lets_everyone_in(url, tmp_path, stimulus_dir):
    slug = _launch(url, tmp_path, stimulus_dir)
    with private_redis() as (redis_url, process), \
            app_server(url, tmp_path, workers=2, threads=4, REDIS_URL=redis_url) as server:
        thread, results = in_background(server.base_url, slug)
        wait_until_stored(url, slug, 5)
        process.kill()  # later participants enter with the limiter counting in memory
        process.wait()
        thread.join(timeout=240)
    check_everything_stored(results, url, slug)
