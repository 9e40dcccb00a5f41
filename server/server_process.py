"""Servers as child processes, for tests and benchmarks: the production server (server/serve.py)
on a free loopback port, and the waits that tell when a server is ready."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

from server.config import ROOT

LISTENING = re.compile(r"Listening at: (http://[\d.]+:\d+)")  # granian's and gunicorn's
_WORKER = re.compile(r"Spawning worker-\d+ with PID: (\d+)")
APP_READY = "assay app ready in worker"


def free_port() -> int:
    """A port free now on the loopback (granian cannot bind port 0 and report it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Poll ``url`` until it answers at all: refused until the server binds, unanswered (a
    read timeout) while its worker is still loading the app, on a busy machine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited ({process.returncode})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.2)


@dataclass
class RunningServer:
    base_url: str
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text()

    def worker_pids(self) -> list[int]:
        """Every worker the server has started, in order (respawned ones too)."""
        return [int(pid) for pid in _WORKER.findall(self.log_text())]

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a machine that dies."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@contextmanager
def running_process(command: list[str], env: dict[str, str], log_path: Path,
                    ready: Callable[[str], str | None], timeout: float = 60,
                    cwd: Path = ROOT) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``command`` in a session of its own, its output to ``log_path``; yield (what
    ``ready`` returns for its log, the process) once that is not None. On exit, SIGTERM to
    the whole session, then SIGKILL if it has not stopped in 30 s."""
    with open(log_path, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while (found := ready(log_path.read_text())) is None:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited ({process.returncode}):\n"
                                   f"{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} not ready after {timeout} s:\n"
                                   f"{log_path.read_text()}")
            time.sleep(0.1)
        yield found, process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _granian_ready(log: str) -> str | None:
    """The base URL once the server listens and every worker it spawned has built the app."""
    found = LISTENING.search(log)
    spawned = len(_WORKER.findall(log))
    return found.group(1) if found and spawned and log.count(APP_READY) >= spawned else None


def local_env(database_url: str, instance: Path, *, workers: int | None = None,
              threads: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of a production server on the loopback, for tests and benchmarks:
    plain HTTP (cookies not HTTPS-only), a fresh secret key, a free port, no shared Redis,
    and an entry rate limit that many simulated participants from one address pass."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=database_url, ASSAY_SECRET_KEY=secrets.token_hex(32),
               ASSAY_SECURE_COOKIES="0", ASSAY_INSTANCE=str(instance),
               ASSAY_BIND=f"127.0.0.1:{free_port()}",
               ASSAY_ENTRY_RATE_LIMIT="1000000 per minute")
    if workers:
        env["ASSAY_WORKERS"] = str(workers)
    if threads:
        env["ASSAY_THREADS"] = str(threads)
    env.update(extra)
    return env


@contextmanager
def running_server(env: dict[str, str], log_path: Path,
                   timeout: float = 60) -> Iterator[RunningServer]:
    """``assay serve --production`` with ``env`` (see local_env) as its whole environment;
    yields once every worker has built its app; stopped on exit."""
    command = [str(Path(sys.executable).parent / "assay"), "serve", "--production"]
    with running_process(command, env, log_path, _granian_ready, timeout) as (base, process):
        yield RunningServer(base, log_path, process)
