"""granian (what `assay serve --production` runs) and gunicorn side by side, on the same app,
database and load: the reason Assay deploys granian, measured again on this machine.

    .venv/bin/pip install gunicorn   # not a dependency of Assay
    .venv/bin/python benchmarks/wsgi_servers.py --quick

For each server: the lean closed loop of benchmarks/server_load.py (trials/s, and CPU per
trial of the server, PostgreSQL and the load generator) and its open loop with 2 s think time
(p99 at each step). granian runs as deployed (a worker per core, two threads each); gunicorn as
it was deployed before, and as its docs advise: gthread workers, 2 x cores + 1 of them, two
threads each, access log on for both. The last line is one JSON object, with granian's ratios
to gunicorn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_load import (  # noqa: E402
    app_server,
    check_database,
    launch_demo,
    open_loop,
    per_trial_ms,
    run_load,
)
from server.migrate import scratch_database  # noqa: E402
from server.server_process import (  # noqa: E402
    RunningServer,
    free_port,
    local_env,
    running_process,
    wait_until_answers,
)


@contextmanager
def gunicorn(database_url: str, workdir: Path, workers: int | None,
             threads: int) -> Iterator[RunningServer]:
    """gunicorn serving server.wsgi:app; yields once every worker answers."""
    binary = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("gunicorn is not installed: .venv/bin/pip install gunicorn")
    port = free_port()
    workers = workers or 2 * (os.cpu_count() or 1) + 1
    command = [binary, "--worker-class", "gthread", "--workers", str(workers), "--threads",
               str(threads), "--bind", f"127.0.0.1:{port}", "--access-logfile", "-",
               "--access-logformat", '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(M)sms %(p)s',
               "server.wsgi:app"]
    env = local_env(database_url, workdir / "instance")

    def booted(log: str) -> str | None:
        return "listening" if log.count("Booting worker") >= workers else None

    with running_process(command, env, workdir / "gunicorn.log", booted) as (_, process):
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", process)
        time.sleep(2.0)  # every worker has loaded the app (gunicorn does not log it)
        yield RunningServer(f"http://127.0.0.1:{port}", workdir / "gunicorn.log", process)


def measure(server: str, url: str, workdir: Path, participants: int, concurrency: int,
            steps: list[int], window_s: float) -> dict:
    slug, crowd_slug = launch_demo(url, workdir), launch_demo(url, workdir, main=40)
    start = gunicorn if server == "gunicorn" else app_server
    with start(url, workdir, None, 2) as served:
        base = served.base_url
        load = run_load(base, slug, participants, concurrency, True,
                        server_pid=served.process.pid)
        stored = check_database(url, load["results"])
        crowd = open_loop(base, crowd_slug, steps, think_s=2.0, window_s=window_s)
    crowd_stored = check_database(url, crowd["results"])
    return {
        "trials_per_s": round(stored["stored"] / load["trial_phase_s"], 1),
        "cpu_ms_per_trial": per_trial_ms(load["cpu_s"], stored["stored"]),
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
