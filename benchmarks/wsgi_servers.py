"""gunicorn (deploy/gunicorn.conf.py) and granian side by side on the same app, database and
load: which WSGI server to deploy is decided by this, not by reputation.

    .venv/bin/pip install granian   # not a dependency of Assay (yet)
    .venv/bin/python benchmarks/wsgi_servers.py --quick

For each server: the lean closed loop of benchmarks/server_load.py (trials/s, and CPU per
trial of the server, PostgreSQL and the load generator) and its open loop with 2 s think time
(p99 at each step). granian runs with as many workers as cores and two blocking threads each
(more threads per worker measured slower on 2 cores: they contend for the GIL). The last line
is one JSON object, with granian's ratios to gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import (  # noqa: E402
    check_database,
    gunicorn,
    gunicorn_pid,
    launch_demo,
    open_loop,
    run_load,
)
from server.migrate import scratch_database  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def granian(database_url: str, workdir: Path, workers: int,
            threads: int) -> Iterator[tuple[str, int]]:
    """granian serving server.wsgi:app as gunicorn does; yields (base URL, pid)."""
    binary = shutil.which("granian", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("granian is not installed: .venv/bin/pip install granian")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=database_url, ASSAY_SECRET_KEY=secrets.token_hex(32),
               ASSAY_SECURE_COOKIES="0", ASSAY_INSTANCE=str(workdir / "instance"),
               ASSAY_ENTRY_RATE_LIMIT="1000000 per minute")
    command = [binary, "--interface", "wsgi", "--http", "1", "--host", "127.0.0.1", "--port",
               str(port), "--workers", str(workers), "--blocking-threads", str(threads),
               "--log-level", "warning", "server.wsgi:app"]
    with open(workdir / "granian.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((workdir / "granian.log").read_text()) from None
                time.sleep(0.2)
        time.sleep(1.0)  # every worker up
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(server: str, url: str, workdir: Path, participants: int, concurrency: int,
            steps: list[int], window_s: float) -> dict:
    slug, crowd_slug = launch_demo(url, workdir), launch_demo(url, workdir, main=40)
    if server == "gunicorn":
        context = gunicorn(url, workdir, None, 2)
    else:
        context = granian(url, workdir, os.cpu_count() or 2, 2)
    with context as served:
        base, pid = (served, gunicorn_pid(workdir / "gunicorn.log")) \
            if server == "gunicorn" else served
        load = run_load(base, slug, participants, concurrency, True, server_pid=pid)
        stored = check_database(url, load["results"])
        crowd = open_loop(base, crowd_slug, steps, think_s=2.0, window_s=window_s)
    crowd_stored = check_database(url, crowd["results"])
    return {
        "trials_per_s": round(stored["stored"] / load["trial_phase_s"], 1),
        "cpu_ms_per_trial": {k: round(1000 * v / max(stored["stored"], 1), 3)
                             for k, v in load["cpu_s"].items()},
        "open_loop_max_participants": crowd["max_participants"],
        "open_loop_p99_ms": {s["participants"]: s["p99_ms"] for s in crowd["steps"]},
        "lost": stored["lost"] + crowd_stored["lost"],
        "duplicates": stored["duplicates"] + crowd_stored["duplicates"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 4 min)")
    parser.add_argument("--postgres", default=os.environ.get(
        "ASSAY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    participants, steps = (200, [500, 1000]) if args.quick else (400, [500, 1000, 1500, 2000])
    figures: dict = {"cpu_count": os.cpu_count(), "loadavg_1m_at_start":
                     round(os.getloadavg()[0], 2), "participants": participants,
                     "concurrency": 32}
    for server in ("gunicorn", "granian"):
        with tempfile.TemporaryDirectory(prefix="assay-wsgi-") as tmp, \
                scratch_database(args.postgres) as url:
            figures[server] = measure(server, url, Path(tmp), participants, 32, steps,
                                      10.0 if args.quick else 20.0)
        print(server, json.dumps(figures[server]), flush=True)
    figures["granian_throughput_ratio"] = round(
        figures["granian"]["trials_per_s"] / figures["gunicorn"]["trials_per_s"], 2)
    figures["granian_server_cpu_ratio"] = round(
        figures["granian"]["cpu_ms_per_trial"]["server"]
        / figures["gunicorn"]["cpu_ms_per_trial"]["server"], 2)
    print(json.dumps(figures), flush=True)
    clean = all(figures[s]["lost"] == 0 and figures[s]["duplicates"] == 0
                for s in ("gunicorn", "granian"))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
