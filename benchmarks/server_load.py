"""Load benchmark: simulated participants against the production server on PostgreSQL, on
loopback.

    .venv/bin/python benchmarks/server_load.py --quick

Creates a scratch PostgreSQL database (dropped at the end), launches the demo study on the
procedural stimulus set, starts `assay serve --production` (granian) on a free loopback port,
and runs simulated participants (server/simulate.py, the browser's HTTP API) concurrently.
Then measures raw single-row INSERT throughput of the same PostgreSQL at the same concurrency
(psycopg, one transaction per row, into a scratch table shaped like trial_responses: same
columns, unique key and foreign key). Prints trials stored per second, p50/p99 latency of
trial POSTs, lost trials (answered 2xx but missing from the database), duplicate rows (beyond
one per session and trial), and the ratio to the raw INSERT rate. Then, unless --no-psiturk,
Assay and psiTurk 3.3.1 side by side at 16 and at 100 trials per participant, the same
participants and concurrency, each on its own server (psiTurk on gunicorn, 2 x cores + 1
workers with 2 threads each; benchmarks/psiturk.py: psiTurk saves the whole accumulated task
data after every trial, so its bytes per trial grow with study length); each side three
times, alternating, the median run reported. The last line is one JSON object with those
figures.

Client, server and database share the machine's cores: the figures are for this machine and
this setup, not a capacity plan.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from experiments.study import load_study
from server.app import create_app
from server.catalog import launch_study
from server.extensions import get_db
from server.migrate import libpq_dsn, scratch_database
from server.server_process import RunningServer, local_env, running_server
from server.simulate import TOKEN, ImageCache, SimResult, SimulationError, run_participant
from server.tokens import HEADER
from stimuli.procedural import build_procedural_set

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import http_retry  # noqa: E402
from benchmarks.psiturk import run_psiturk  # noqa: E402

log = logging.getLogger("server_load")


def launch_demo(database_url: str, workdir: Path, main: int | None = None,
                stimuli: dict | None = None) -> str:
    """The demo study on the procedural stimulus set (``main`` trials each, if given; the
    set built with ``stimuli``'s options, if given); returns its slug."""
    if not (workdir / "stimuli").exists():
        build_procedural_set(workdir / "stimuli", seed=0, **(stimuli or {}))
    study_file = workdir / "study.toml"
    shutil.copyfile(ROOT / "experiments" / "demos" / "2afc.toml", study_file)
    spec = load_study(study_file)
    # no recruitment target: the crowd is larger than the demo's 20 per condition
    spec = spec.model_copy(update={"recruitment": spec.recruitment.model_copy(
        update={"target_per_condition": None})})
    if main is not None:
        spec = spec.model_copy(update={"slug": f"{spec.slug}-{main}", "trials":
                                       spec.trials.model_copy(update={"main": main})})
    app = create_app({"DATABASE_URL": database_url, "INSTANCE_DIR": workdir, "SECRET_KEY": "x"})
    try:
        with app.app_context():
            db = get_db()
            with db.begin():
                launched = launch_study(db, spec, study_file)
    finally:
        app.extensions["assay.engine"].dispose()
    return launched.slug


@contextmanager
def app_server(database_url: str, workdir: Path, workers: int | None,
               threads: int) -> Iterator[RunningServer]:
    """``assay serve --production`` on a free loopback port, as deployed (access log on)."""
    env = local_env(database_url, workdir / "instance", workers=workers, threads=threads)
    with running_server(env, workdir / "server.log") as server:
        log.info("server at %s", server.base_url)
        yield server


class LeanParticipant:
    """A participant driven with a bare HTTP client on one keep-alive connection: no image
    downloads, no decoding, answers that are valid but not looked at. It spends a fraction
    of a millisecond of CPU per request, so that the driver does not starve the server it
    measures on a small machine (its CPU share is reported)."""

    def __init__(self, base: str, slug: str, pid: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http_retry.Connection(host, int(port), timeout=60)
        self.slug, self.pid, self.headers = slug, pid, {"Content-Type": "application/json"}
        self.latencies_ms: list[float] = []
        self.trial_bytes = 0  # request bodies of trial POSTs
        self.sent = 0

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body)
        try:
            return http_retry.request(self.conn, method, path, payload, self.headers)
        except RuntimeError as exc:
            raise SimulationError(str(exc)) from None

    def enter(self) -> list[int]:
        """Entry, consent, instructions; returns the indices of the trials to answer."""
        query = f"?PROLIFIC_PID={self.pid}&STUDY_ID=LOAD&SESSION_ID=S{self.pid}"
        status, page = self.request("GET", f"/s/{self.slug}{query}")
        match = TOKEN.search(page.decode())
        if status != 200 or match is None:
            raise SimulationError(f"entry failed: {status}")
        self.headers[HEADER] = match.group(1)
        self.request("POST", "/api/consent", {"agree": True})
        self.request("POST", "/api/instructions", {"seconds": 30.0})
        state = json.loads(self.request("GET", "/api/state")[1])
        self.questionnaire = {q["id"]: q["options"][0] if q["kind"] == "choice" else "x"
                              for q in state["questionnaire"]}
        practice = [t["index"] for t in state["trials"] if t["phase"] == "practice"]
        main = [t["index"] for t in state["trials"] if t["phase"] == "main"]
        return practice[:state["practice"]["trials"]] + main

    def trial(self, index: int) -> None:
        shown = datetime.now(UTC)
        body = {"trial_index": index, "answer": {"choice": "a", "confidence": 2},
                "rt_ms": 900.0, "presented_at": shown.isoformat(),
                "responded_at": (shown + timedelta(milliseconds=900)).isoformat()}
        self.trial_bytes += len(json.dumps(body))  # ASCII: one byte a character
        start = time.perf_counter()
        status, data = self.request("POST", "/api/trials", body)
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise SimulationError(f"trial {index}: {status} {data[:200]!r}")
        self.sent += 1

    def finish(self) -> SimResult:
        self.request("POST", "/api/questionnaire", {"answers": self.questionnaire})
        status, data = self.request("POST", "/api/finish", {})
        done = json.loads(data)
        self.conn.close()
        return SimResult(self.pid, done.get("status", str(status)), done.get("code"),
                         self.sent, self.latencies_ms)


def cpu_seconds(server_pid: int | None) -> dict[str, float]:
    """CPU seconds used so far by the app server (the process ``server_pid`` and its
    children) and by PostgreSQL's processes, read from /proc: with the driver's own, where a
    trial's CPU goes. PostgreSQL's figure counts any other use of it on the machine too (the
    load average is reported)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: str) -> tuple[str, float]:
        stat = Path(f"/proc/{pid}/stat").read_text()
        utime, stime = stat[stat.rindex(")") + 2:].split()[11:13]
        return stat[stat.index("(") + 1:stat.rindex(")")], (int(utime) + int(stime)) / tick

    def tree(pid: str) -> list[str]:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *(p for child in children for p in tree(child))]

    totals = {"server": 0.0, "postgres": 0.0}
    for pid in tree(str(server_pid)) if server_pid else []:
        with contextlib.suppress(OSError):  # gone meanwhile
            totals["server"] += used(pid)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                name, seconds = used(entry.name)
                totals["postgres"] += seconds if name == "postgres" else 0.0
    return totals


def per_trial_ms(cpu_s: dict[str, float], stored: int) -> dict[str, float]:
    """CPU seconds by process group (``run_load``'s ``cpu_s``) as ms per stored trial."""
    return {k: round(1000 * v / max(stored, 1), 3) for k, v in cpu_s.items()}


def run_load(base: str, slug: str, n: int, concurrency: int, shared_images: bool,
             lean: bool = True, server_pid: int | None = None) -> dict:
    """N participants, ``concurrency`` at a time; failures counted, not raised.

    The lean driver enters everyone first, then times the trial phase alone (closed loop:
    each of ``concurrency`` threads sends its participants' trials back to back), so that
    trials/s measures the trial path. The browser-like driver (``simulate``'s participants)
    times whole paths; with ``shared_images`` they share one image cache, as behind a CDN.
    """
    errors: list[str] = []
    start, cpu = time.perf_counter(), time.process_time()
    if lean:
        def enter(i: int) -> tuple[LeanParticipant, list[int]] | None:
            try:
                p = LeanParticipant(base, slug, f"LOAD{i:06d}")
                return p, p.enter()
            except (SimulationError, OSError) as exc:
                errors.append(str(exc)[:200])
                return None

        def answer(entered: tuple[LeanParticipant, list[int]]) -> SimResult | None:
            p, indices = entered
            try:
                for index in indices:
                    p.trial(index)
                return p
            except (SimulationError, OSError) as exc:
                errors.append(str(exc)[:200])
                return None

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            entered = [e for e in pool.map(enter, range(n)) if e is not None]
            trial_start, trial_cpu = time.perf_counter(), time.process_time()
            others = cpu_seconds(server_pid)
            answered = [p for p in pool.map(answer, entered) if p is not None]
            trial_elapsed = time.perf_counter() - trial_start
            trial_cpu = time.process_time() - trial_cpu
            others = {k: v - others[k] for k, v in cpu_seconds(server_pid).items()}
            trial_bytes = sum(p.trial_bytes for p in answered)
            results = list(pool.map(LeanParticipant.finish, answered))
    else:
        skills = np.random.default_rng(0).gamma(4.0, 0.3, size=n)
        cache = ImageCache() if shared_images else None

        def one(i: int) -> SimResult | None:
            try:
                return run_participant(base, slug, f"LOAD{i:06d}", skill=float(skills[i]),
                                       seed=i, images=cache)
            except (SimulationError, OSError) as exc:
                errors.append(str(exc)[:200])
                return None

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = [r for r in pool.map(one, range(n)) if r is not None]
        trial_elapsed = time.perf_counter() - start
        trial_cpu = time.process_time() - cpu
        trial_bytes = 0  # not counted
        others = {}
    elapsed = time.perf_counter() - start
    return {"results": results, "errors": errors, "elapsed_s": elapsed,
            "trial_phase_s": trial_elapsed, "trial_bytes": trial_bytes,
            "loadgen_cpu_share": trial_cpu / (trial_elapsed * os.cpu_count()),
            "cpu_s": {"loadgen": trial_cpu, **others}}


def run_assay(postgres_url: str, participants: int, trials: int, concurrency: int,
              workers: int | None = None, threads: int = 2) -> dict:
    """The lean closed loop at ``trials`` trials per participant (practice, main and catch),
    on a scratch database and server of its own: Assay's side of benchmarks/psiturk.py's
    ``run_psiturk``, with the same keys."""
    spec = load_study(ROOT / "experiments" / "demos" / "2afc.toml")
    practice, rate = spec.practice.trials, spec.trials.catch_rate
    # catch trials come on top of trials.main (round(catch_rate * main) of them)
    main = next((m for m in range(1, trials) if practice + m + round(rate * m) == trials), None)
    if main is None:
        raise ValueError(f"no trials.main gives the demo {trials} trials per participant")
    # 12 units per condition (6 per kind, 2 layers), n_queries query pairs each
    stimuli = {"n_queries": max(4, math.ceil(trials / 12))}
    with (
        tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp,
        scratch_database(postgres_url) as url,
    ):
        workdir = Path(tmp)
        slug = launch_demo(url, workdir, main=main, stimuli=stimuli)
        with app_server(url, workdir, workers, threads) as server:
            load = run_load(server.base_url, slug, participants, concurrency,
                            shared_images=True)
        checked = check_database(url, load["results"])
    results = load["results"]
    sent = sum(r.trials_sent for r in results)
    if any(r.trials_sent != trials for r in results):
        raise RuntimeError(f"trials.main = {main} did not give {trials} trials each")
    latencies = np.array([ms for r in results for ms in r.latencies_ms])
    for error in load["errors"][:5]:
        log.info("failed participant: %s", error)
    return {
        "participants": participants, "trials": trials, "failed": len(load["errors"]),
        "trials_sent": sent, "trials_stored": checked["stored"],
        "trial_phase_s": round(load["trial_phase_s"], 2),
        "trials_per_s": round(checked["stored"] / load["trial_phase_s"], 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "bytes_per_trial": round(load["trial_bytes"] / max(sent, 1)),
        "lost": checked["lost"], "duplicates": checked["duplicates"],
        "loadgen_cpu_share": round(load["loadgen_cpu_share"], 3),
        "cpu_ms_per_trial": per_trial_ms(load["cpu_s"], checked["stored"]),
    }


def by_trials(postgres_url: str, participants: int, concurrency: int, workers: int | None,
              threads: int, lengths: tuple[int, ...] = (16, 100),
              repeats: int = 3) -> dict[str, dict]:
    """Assay and psiTurk side by side at each study length, the same participants, trials,
    concurrency and threads per worker; ``workers`` are Assay's (psiTurk's gunicorn keeps its
    2 x cores + 1); {"assay"|"psiturk": {str(trials): ...}}.

    Each side runs ``repeats`` times, the two alternating (which goes first swaps each time),
    and the run of median throughput is reported, with every run's figure and the losses of
    all: on a small shared machine one run of ten seconds can be slowed by half."""
    runs: dict[str, dict] = {"assay": {}, "psiturk": {}}
    sides = (("assay", run_assay), ("psiturk", run_psiturk))
    for trials in lengths:
        got: dict[str, list[dict]] = {"assay": [], "psiturk": []}
        for rep in range(repeats):
            for name, run in sides if rep % 2 == 0 else sides[::-1]:
                one = run(postgres_url, participants, trials, concurrency,
                          workers if name == "assay" else None, threads)
                got[name].append(one)
                log.info("%s, %d trials each: %.1f trials/s, p50 %.1f ms, p99 %.1f ms, %d "
                         "bytes per trial, lost %d", name, trials, one["trials_per_s"],
                         one["p50_ms"], one["p99_ms"], one["bytes_per_trial"], one["lost"])
        for name, all_runs in got.items():
            ranked = sorted(all_runs, key=lambda r: r["trials_per_s"])
            runs[name][str(trials)] = {
                **ranked[len(ranked) // 2],
                "trials_per_s_runs": [r["trials_per_s"] for r in all_runs],
                "lost": sum(r["lost"] for r in all_runs),
            }
    return runs


def _entered(where: tuple[str, str, str]) -> tuple[LeanParticipant, list[int]]:
    p = LeanParticipant(*where)
    return p, p.enter()


def _think_and_answer(p: LeanParticipant, indices: list[int], go: threading.Event,
                      stop: threading.Event, think_s: float, seed: int,
                      errors: list[str]) -> None:
    """From ``go`` until ``stop``: think, then send the next trial."""
    rng = np.random.default_rng(seed)
    go.wait()
    while not stop.wait(think_s * rng.uniform(0.5, 1.5)):
        if p.sent >= len(indices):
            return
        try:
            p.trial(indices[p.sent])
        except (SimulationError, OSError) as exc:
            errors.append(str(exc)[:200])
            return


def open_loop(base: str, slug: str, steps: list[int], think_s: float, window_s: float,
              limit_ms: float = 100.0) -> dict:
    """Participants who think about ``think_s`` seconds (uniform 0.5-1.5x) before each
    trial, as people do: at each step, more of them (entered beforehand, not timed) send
    trials for ``window_s`` seconds. The largest number held with p99 <= ``limit_ms`` and
    no failure is the result; it stops at the first step that misses."""
    crowd: list[tuple[LeanParticipant, list[int]]] = []
    rows, held, errors = [], 0, []
    for n in steps:
        with ThreadPoolExecutor(max_workers=16) as pool:
            crowd += pool.map(_entered, [(base, slug, f"OPEN{i:06d}")
                                         for i in range(len(crowd), n)])
        go, stop = threading.Event(), threading.Event()
        before = [len(p.latencies_ms) for p, _ in crowd]
        threads = [threading.Thread(target=_think_and_answer, daemon=True,
                                    args=(*crowd[k], go, stop, think_s, k * 7919 + n, errors))
                   for k in range(n)]
        for t in threads:  # all started before any thinks: starting a thousand threads
            t.start()      # takes the driver's GIL, which would delay the first answers
        go.set()
        time.sleep(window_s)
        stop.set()
        for t in threads:
            t.join()
        latencies = np.array([ms for (p, _), b in zip(crowd, before, strict=True)
                              for ms in p.latencies_ms[b:]])
        p99 = float(np.percentile(latencies, 99)) if len(latencies) else float("inf")
        ok = p99 <= limit_ms and not errors
        rows.append({"participants": n, "trials": len(latencies),
                     "trials_per_s": round(len(latencies) / window_s, 1),
                     "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                     "p99_ms": round(p99, 2), "ok": ok})
        log.info("open loop: %d participants, %d trials (%.0f/s), p50 %.1f ms, p99 %.1f ms%s",
                 n, len(latencies), len(latencies) / window_s, rows[-1]["p50_ms"], p99,
                 "" if ok else "  <- over the limit" if not errors else f"  {errors[0]}")
        if not ok:
            break
        held = n
    results = [SimResult(p.pid, "open", None, p.sent, p.latencies_ms) for p, _ in crowd]
    return {"max_participants": held, "steps": rows, "results": results, "errors": errors}


def check_database(database_url: str, results: list[SimResult]) -> dict:
    """Lost trials (acknowledged but absent) and duplicate rows, counted in the database."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        stored = dict(
            conn.execute(
                """SELECT p.platform_pid, count(t.id)
                   FROM platform_identities p LEFT JOIN trial_responses t
                     ON t.session_id = p.session_id
                   GROUP BY p.platform_pid"""
            ).fetchall()
        )
        duplicates = conn.execute(
            """SELECT coalesce(sum(n - 1), 0) FROM (
                   SELECT count(*) AS n FROM trial_responses GROUP BY session_id, trial_index
               ) AS per_trial"""
        ).fetchone()[0]
        total = conn.execute("SELECT count(*) FROM trial_responses").fetchone()[0]
    # The simulator sends each trial index of a participant at most once, and counts only
    # trials answered 2xx, so fewer rows than sends means acknowledged trials went missing.
    lost = sum(max(0, r.trials_sent - stored.get(r.pid, 0)) for r in results)
    return {"stored": int(total), "lost": int(lost), "duplicates": int(duplicates)}


def raw_insert_rate(database_url: str, concurrency: int, seconds: float) -> dict:
    """Single-row INSERTs, one transaction each, ``concurrency`` connections at once."""
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw_inserts")
        conn.execute(
            "CREATE TABLE bench_raw_inserts (LIKE trial_responses INCLUDING ALL)"
        )  # columns, defaults, identity, unique key (session_id, trial_index)
        conn.execute(
            "ALTER TABLE bench_raw_inserts ADD FOREIGN KEY (session_id) REFERENCES sessions (id)"
        )
        conn.execute("ALTER TABLE bench_raw_inserts ALTER COLUMN id DROP DEFAULT")
        conn.execute("CREATE SEQUENCE IF NOT EXISTS bench_raw_ids OWNED BY bench_raw_inserts.id")
        conn.execute(
            "ALTER TABLE bench_raw_inserts ALTER COLUMN id SET DEFAULT nextval('bench_raw_ids')"
        )
        session_ids = [row[0] for row in conn.execute("SELECT id FROM sessions ORDER BY id")]
    if not session_ids:
        raise RuntimeError("no sessions to attach raw rows to")
    counts = [0] * concurrency
    barrier = threading.Barrier(concurrency)
    sql = (
        "INSERT INTO bench_raw_inserts (session_id, trial_index, answer, score,"
        " rt_ms, presented_at, responded_at, received_at, events)"
        " VALUES (%s, %s, '{\"choice\": \"a\", \"confidence\": 2}', 1.0, 812.5, now(), now(),"
        " now(), '[]')"
    )

    def worker(k: int) -> None:
        with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
            session_id = session_ids[k % len(session_ids)]
            barrier.wait()
            deadline = time.perf_counter() + seconds
            i = 0
            while time.perf_counter() < deadline:
                # trial_index unique per worker, so the unique key never fires
                conn.execute(sql, (session_id, 1_000_000 + i * concurrency + k))
                i += 1
            counts[k] = i

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM bench_raw_inserts").fetchone()[0]
        conn.execute("DROP TABLE bench_raw_inserts")
    if rows != sum(counts):
        raise RuntimeError(f"raw inserts: {sum(counts)} sent, {rows} stored")
    return {"rows": rows, "per_s": rows / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 90 s)")
    parser.add_argument("--participants", type=int, help="default 60 quick, 400 otherwise")
    parser.add_argument("--concurrency", type=int, help="default 16 quick, 32 otherwise")
    parser.add_argument("--workers", type=int, help="server workers (default: ASSAY_WORKERS's)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per server worker (ASSAY_THREADS's default)")
    parser.add_argument("--open-loop-steps", help="participants per open-loop step, e.g. "
                        "100,500,1000 (default 250,500,1000 quick; up to 3000 otherwise)")
    parser.add_argument(
        "--browser-like", action="store_true",
        help="drive with assay simulate's participants (images fetched and looked at) "
        "instead of the lean driver",
    )
    parser.add_argument(
        "--images-per-participant",
        action="store_true",
        help="every participant fetches its own images (no shared cache, as with no CDN)",
    )
    parser.add_argument(
        "--no-psiturk", action="store_true",
        help="skip the side by side with psiTurk 3.3.1 (its environment, .venv-psiturk, is "
        "made on first use)",
    )
    parser.add_argument("--compare-participants", type=int,
                        help="participants in the psiTurk side by side (default 30 quick, 100)")
    parser.add_argument("--compare-concurrency", type=int,
                        help="concurrency of the psiTurk side by side (default 8 quick, 32)")
    parser.add_argument("--compare-repeats", type=int, default=3,
                        help="runs of each side at each length, alternating; the median is "
                             "reported (default 3)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "ASSAY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="a PostgreSQL URL whose user may create databases (env ASSAY_TEST_POSTGRES)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    log.setLevel(logging.INFO)
    n = args.participants or (60 if args.quick else 400)
    concurrency = args.concurrency or (16 if args.quick else 32)
    raw_seconds = 4.0 if args.quick else 10.0
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure

    with (
        tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp,
        scratch_database(args.postgres) as url,
    ):
        workdir = Path(tmp)
        t0 = time.perf_counter()
        slug = launch_demo(url, workdir)
        log.info("demo study launched on the procedural set (%.1f s)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        with app_server(url, workdir, args.workers, args.threads) as server:
            base = server.base_url
            log.info("server ready (%.1f s)", time.perf_counter() - t0)
            log.info("%d participants, %d at a time, against %s", n, concurrency, base)
            load = run_load(base, slug, n, concurrency, not args.images_per_participant,
                            lean=not args.browser_like, server_pid=server.process.pid)
            results = load["results"]
            checked = check_database(url, results)
            steps = [int(x) for x in args.open_loop_steps.split(",")] if args.open_loop_steps \
                else ([250, 500, 1000] if args.quick else [250, 500, 1000, 1500, 2000, 3000])
            opened = open_loop(base, launch_demo(url, workdir, main=40), steps,
                               think_s=2.0, window_s=10.0 if args.quick else 20.0)
        open_checked = check_database(url, opened["results"])
        raw = raw_insert_rate(url, concurrency, raw_seconds)
    compare_n = args.compare_participants or (30 if args.quick else 100)
    compare_concurrency = args.compare_concurrency or (8 if args.quick else 32)
    side = {"assay": {}, "psiturk": {}} if args.no_psiturk else by_trials(
        args.postgres, compare_n, compare_concurrency, args.workers, args.threads,
        repeats=args.compare_repeats)

    latencies = np.array([ms for r in results for ms in r.latencies_ms])
    trials_per_s = checked["stored"] / load["trial_phase_s"]
    figures = {
        "participants": n,
        "completed": sum(r.status in ("completed", "screened_out") for r in results),
        "failed": len(load["errors"]),
        "concurrency": concurrency,
        "trials_sent": int(sum(r.trials_sent for r in results)),
        "trials_stored": checked["stored"],
        "elapsed_s": round(load["elapsed_s"], 2),
        "trial_phase_s": round(load["trial_phase_s"], 2),
        "trials_per_s": round(trials_per_s, 1),
        "trial_post_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "trial_post_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "lost": checked["lost"],
        "duplicates": checked["duplicates"],
        "open_loop_max_participants": opened["max_participants"],
        "open_loop_think_s": 2.0,
        "open_loop_steps": opened["steps"],
        "open_loop_lost": open_checked["lost"],
        "raw_inserts_per_s": round(raw["per_s"], 1),
        "ratio_to_raw_insert": round(trials_per_s / raw["per_s"], 3),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_start": round(load_at_start, 2),
        "loadgen_cpu_share": round(load["loadgen_cpu_share"], 3),
        "cpu_ms_per_trial": per_trial_ms(load["cpu_s"], checked["stored"]),
        "driver": "browser-like" if args.browser_like else "lean",
        "images": "per participant" if args.images_per_participant else "shared cache",
    }
    if not args.no_psiturk:
        shown = ("trials_per_s", "p99_ms", "bytes_per_trial", "lost", "trials_per_s_runs")
        figures["psiturk"] = {k: {f: v[f] for f in shown} for k, v in side["psiturk"].items()}
        figures["assay_by_trials"] = {k: {f: v[f] for f in shown}
                                      for k, v in side["assay"].items()}
        figures["speedup_vs_psiturk_100"] = round(
            side["assay"]["100"]["trials_per_s"] / side["psiturk"]["100"]["trials_per_s"], 2)
        figures["compare_participants"] = compare_n
        figures["compare_concurrency"] = compare_concurrency
    for error in load["errors"][:5]:
        log.info("failed participant: %s", error)
    log.info(
        "%d trials stored in %.1f s of trial phase: %.1f trials/s (%d at a time; whole run "
        "%.1f s)", checked["stored"], load["trial_phase_s"], trials_per_s, concurrency,
        load["elapsed_s"])
    log.info(
        "trial POST latency p50 %.1f ms, p99 %.1f ms",
        figures["trial_post_p50_ms"],
        figures["trial_post_p99_ms"],
    )
    log.info("lost %d, duplicates %d", checked["lost"], checked["duplicates"])
    log.info(
        "raw single-row INSERTs: %.1f rows/s; ratio %.3f",
        raw["per_s"],
        figures["ratio_to_raw_insert"],
    )
    print(json.dumps(figures), flush=True)
    clean = not load["errors"] and checked["lost"] == 0 and not checked["duplicates"]
    clean = clean and all(not r["failed"] and not r["lost"] and not r["duplicates"]
                          for r in side["assay"].values())
    return 0 if clean and open_checked["lost"] == 0 and not open_checked["duplicates"] else 1


if __name__ == "__main__":
    sys.exit(main())
