"""psiTurk 3.3.1 beside Assay in the load benchmark (benchmarks/server_load.py calls it).

psiTurk runs from a virtual environment of its own (``.venv-psiturk`` at the repository root,
made on first use: it is never a dependency of Assay) under gunicorn, on a scratch PostgreSQL
database. It is driven the way its browser code drives it: a participant enters through /pub,
/consent and /exp (which creates the row), loads its task data (GET /sync/<uniqueId>) and
starts the task (PUT /sync/<uniqueId>, POST /inexp); then after every trial
``psiTurk.recordTrialData`` appends the trial to the task data and ``psiTurk.saveData`` PUTs
the whole task data again, so the bytes sent per trial grow with the number of trials done.

The driver is the closed loop of server_load's lean driver: everyone enters first (not
timed), then the trial phase is timed alone, each of ``concurrency`` threads sending its
participants' saves back to back on one keep-alive connection (benchmarks/http_retry.py).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import psycopg
from sqlalchemy import make_url

from server.migrate import libpq_dsn, scratch_database
from server.server_process import LISTENING, running_process

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too
from benchmarks import http_retry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("server_load.psiturk")

# pyOpenSSL 22 (pinned by psiTurk) breaks with cryptography >= 39; psycopg2 is the driver
# behind SQLAlchemy 1.3's postgres:// URLs (psiTurk pins SQLAlchemy ~= 1.3.5).
REQUIREMENTS = ("psiturk==3.3.1", "cryptography==38.0.4", "psycopg2-binary==2.9.13")
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0.0.0 Safari/537.36")
_UNIQUE_ID = re.compile(r'uniqueId = "([^"]+)"')
READY = "psiturk app ready in worker"

# The fewest templates psiturk.experiment needs: it refuses to start without
# thanks-mturksubmit.html and closepopup.html, and /pub and /consent insert the mode after
# "workerId={{ workerid }}".
TEMPLATES = {
    "ad.html": '<a href="/consent?hitId={{ hitid }}&assignmentId={{ assignmentid }}'
               '&workerId={{ workerid }}">begin</a>',
    "consent.html": '<a href="/exp?hitId={{ hitid }}&assignmentId={{ assignmentid }}'
                    '&workerId={{ workerid }}">I agree</a>',
    "exp.html": '<script>var uniqueId = "{{ uniqueId }}"; var condition = {{ condition }};'
                ' var mode = "{{ mode }}";</script>',
    "thanks-mturksubmit.html": "thanks",
    "closepopup.html": "closing",
    "complete.html": "complete",
    "default.html": "psiTurk",
}
# Logged once a worker has imported the app, so that the benchmark starts when all are up.
GUNICORN_CONF = f'''
def post_worker_init(worker):
    worker.log.info("{READY} %s", worker.pid)
'''


def gunicorn_ready(log: str) -> str | None:
    """gunicorn's base URL once every worker it booted has loaded psiTurk's app."""
    found = LISTENING.search(log)
    booted = log.count("Booting worker")
    return found.group(1) if found and booted and log.count(READY) >= booted else None


def ensure_env(root: Path = ROOT) -> Path:
    """``root/.venv-psiturk`` with psiTurk installed, made once (a stamp file holds the
    requirements it was made with); returns the environment's directory."""
    venv = root / ".venv-psiturk"
    stamp = venv / "assay-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    log.info("setting up psiTurk's environment in %s (once)", venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", *REQUIREMENTS],
                         capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{pip.stderr}")
    stamp.write_text(wanted)
    return venv


def psiturk_url(url: str) -> str:
    """psiTurk's spelling of a PostgreSQL URL: SQLAlchemy 1.3 with psycopg2 reads
    ``postgres://``, and psiTurk's models pick the column type by that prefix."""
    return make_url(url).set(drivername="postgres").render_as_string(hide_password=False)


def write_experiment(directory: Path, database_url: str) -> None:
    """A minimal psiTurk project folder: config.txt, templates, gunicorn hook."""
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in TEMPLATES.items():
        (directory / "templates" / name).write_text(text)
    (directory / "config.txt").write_text(
        "[Database Parameters]\n"
        f"database_url = {database_url}\n"
        "[Server Parameters]\n"
        f"logfile = {directory / 'server.log'}\n"
        "loglevel = 2\n"
        "[Task Parameters]\n"
        "experiment_code_version = load\n"
    )
    (directory / "gunicorn.conf.py").write_text(GUNICORN_CONF)


@contextmanager
def psiturk_server(venv: Path, directory: Path, workers: int, threads: int,
                   worker_class: str = "gthread", timeout: float = 60) -> Iterator[str]:
    """psiturk.experiment:app under gunicorn on a free loopback port; yields its base URL.

    Its tables are created once first: every worker creates any that are missing on
    import, and several doing so at once race on PostgreSQL's catalog.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSITURK_", "DATABASE_"))}
    env["PSITURK_GLOBAL_CONFIG_LOCATION"] = str(directory)  # not the user's ~/.psiturkconfig
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-c", "import psiturk.experiment"], cwd=directory, env=env,
                   check=True, capture_output=True)
    command = [str(venv / "bin" / "gunicorn"), "-c", str(directory / "gunicorn.conf.py"),
               "--bind", "127.0.0.1:0", "--workers", str(workers), "--threads", str(threads),
               "--worker-class", worker_class, "--keep-alive", "5", "--timeout", "30",
               "--log-level", "info", "psiturk.experiment:app"]  # fmt: skip
    with running_process(command, env, directory / "gunicorn.log", gunicorn_ready, timeout,
                         cwd=directory) as (base, _):
        yield base


class PsiturkError(RuntimeError):
    """A participant that psiTurk did not let through."""


class PsiturkParticipant:
    """One browser's requests to psiTurk on one keep-alive connection, its task data kept
    as psiturk.js's Backbone model keeps it."""

    def __init__(self, base: str, worker_id: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http_retry.Connection(host, int(port), timeout=60)
        self.ids = {"hitId": "debugLOAD", "assignmentId": f"debug{worker_id}",
                    "workerId": worker_id, "mode": "debug"}
        self.latencies_ms: list[float] = []
        self.trial_bytes = 0
        self.sent = 0

    def request(self, method: str, path: str, body: str | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        headers = {"User-Agent": USER_AGENT, "Content-Type": content_type}
        try:
            return http_retry.request(self.conn, method, path, body, headers)
        except RuntimeError as exc:
            raise PsiturkError(str(exc)) from None

    def enter(self) -> None:
        """The ad, the consent page, the experiment page (the row is made here), then
        psiturk.js: fetch the task data, and on starting the task save it and POST /inexp."""
        query = urlencode(self.ids)
        for page in ("pub", "consent"):
            status, _ = self.request("GET", f"/{page}?{query}")
            if status != 200:
                raise PsiturkError(f"/{page}: {status}")
        status, page = self.request("GET", f"/exp?{query}")
        match = _UNIQUE_ID.search(page.decode())
        if status != 200 or match is None:
            raise PsiturkError(f"/exp: {status} {page[:200]!r}")
        self.unique_id = match.group(1)
        status, data = self.request("GET", f"/sync/{self.unique_id}")
        if status != 200:
            raise PsiturkError(f"GET /sync: {status}")
        now = int(time.time() * 1000)
        # TaskData's defaults, updated by what /sync returned; initialize() logs two events
        self.task = {"condition": 0, "counterbalance": 0, "assignmentId": 0, "workerId": 0,
                     "hitId": 0, "currenttrial": 0, "bonus": 0, "data": [],
                     "questiondata": {},
                     "eventdata": [
                         {"eventtype": "initialized", "value": None, "timestamp": now,
                          "interval": 0},
                         {"eventtype": "window_resize", "value": [1280, 800],
                          "timestamp": now, "interval": 0}],
                     "useragent": USER_AGENT, "mode": "debug", "id": self.unique_id}
        self.task.update(json.loads(data))
        self.save()
        status, _ = self.request("POST", "/inexp", urlencode({"uniqueId": self.unique_id}),
                                 "application/x-www-form-urlencoded")
        if status != 200:
            raise PsiturkError(f"/inexp: {status}")

    def save(self) -> int:
        """``psiTurk.saveData()``: PUT the whole task data; returns the body's bytes."""
        body = json.dumps(self.task, separators=(",", ":"))  # as JSON.stringify writes it
        status, data = self.request("PUT", f"/sync/{self.unique_id}", body)
        if status != 200:
            raise PsiturkError(f"PUT /sync: {status} {data[:200]!r}")
        return len(body.encode())

    def trial(self, index: int) -> None:
        """``psiTurk.recordTrialData(trial)`` then ``psiTurk.saveData()``, the trial shaped
        like Assay's trial POST body."""
        shown = datetime.now(UTC)
        trial = {"trial_index": index, "answer": {"choice": "a", "confidence": 2},
                 "rt_ms": 900.0, "presented_at": shown.isoformat(),
                 "responded_at": (shown + timedelta(milliseconds=900)).isoformat()}
        start = time.perf_counter()
        self.task["data"].append({"uniqueid": self.unique_id,
                                  "current_trial": self.task["currenttrial"],
                                  "dateTime": int(time.time() * 1000), "trialdata": trial})
        self.task["currenttrial"] += 1
        self.trial_bytes += self.save()
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        self.sent += 1


def check_saved(database_url: str, participants: list[PsiturkParticipant]) -> dict:
    """Trials acknowledged but missing from each participant's final datastring."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        rows = conn.execute("SELECT uniqueid, datastring FROM assignments").fetchall()
    saved = {uid: json.loads(text)["data"] if text else [] for uid, text in rows}
    lost = 0
    for p in participants:
        indices = {t["trialdata"]["trial_index"] for t in saved.get(p.unique_id, [])}
        lost += sum(i not in indices for i in range(p.sent))
    stored = sum(len(data) for data in saved.values())
    return {"stored": stored, "lost": lost}


def run_psiturk(postgres_url: str, participants: int, trials: int, concurrency: int,
                workers: int | None = None, threads: int = 2, worker_class: str = "gthread",
                venv: Path | None = None) -> dict:
    """``participants`` each saving ``trials`` trials, ``concurrency`` at a time, against
    psiTurk on a scratch database beside ``postgres_url``'s. ``workers`` defaults to Assay's
    gunicorn default (2 x cores + 1); the worker class to Assay's (psiTurk's own launcher
    uses gevent, under which psycopg2 blocks a worker's other requests)."""
    venv = venv or ensure_env(ROOT)
    workers = workers or multiprocessing.cpu_count() * 2 + 1
    errors: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="psiturk-bench-") as tmp,
        scratch_database(postgres_url, prefix="psiturk_scratch_", revision="base") as url,
    ):
        directory = Path(tmp)
        write_experiment(directory, psiturk_url(url))
        with psiturk_server(venv, directory, workers, threads, worker_class) as base:
            def enter(i: int) -> PsiturkParticipant | None:
                try:
                    p = PsiturkParticipant(base, f"LOAD{i:06d}")
                    p.enter()
                    return p
                except (PsiturkError, OSError) as exc:
                    errors.append(str(exc)[:200])
                    return None

            def answer(p: PsiturkParticipant) -> None:
                try:
                    for index in range(trials):
                        p.trial(index)
                except (PsiturkError, OSError) as exc:
                    errors.append(str(exc)[:200])
                finally:
                    p.conn.close()

            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                entered = [p for p in pool.map(enter, range(participants)) if p is not None]
                start, cpu = time.perf_counter(), time.process_time()
                list(pool.map(answer, entered))
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu
        checked = check_saved(url, entered)
    latencies = np.array([ms for p in entered for ms in p.latencies_ms])
    sent = sum(p.sent for p in entered)
    figures = {
        "participants": participants, "trials": trials, "failed": len(errors),
        "trials_sent": sent, "trials_stored": checked["stored"],
        "trial_phase_s": round(elapsed, 2),
        "trials_per_s": round(sent / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "bytes_per_trial": round(sum(p.trial_bytes for p in entered) / max(sent, 1)),
        "lost": checked["lost"],
        "loadgen_cpu_share": round(cpu / (elapsed * os.cpu_count()), 3),
    }
    for error in errors[:5]:
        log.info("psiTurk participant failed: %s", error)
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    print(json.dumps(run_psiturk(os.environ.get(
        "ASSAY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        participants=10, trials=16, concurrency=4)))
