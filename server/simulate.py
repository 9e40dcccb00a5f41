"""Simulated participants that drive a running server through the browser's HTTP API.

Each one is a noisy observer of the mean colours of the images it is shown; how it answers
is its paradigm's ``simulate``, so its accuracy depends on the stimuli, as a person's would.
Used by the demo, tests and load tests.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import requests
from PIL import Image

from experiments.paradigms import PARADIGMS

TOKEN = re.compile(r'data-token="([^"]+)"')


class SimulationError(RuntimeError):
    pass


@dataclass
class SimResult:
    pid: str
    status: str
    code: str | None
    trials_sent: int
    latencies_ms: list[float] = field(default_factory=list)


class ImageCache:
    """Pixels (H, W, 3) in [0, 1] per image URL; shared by the participants of one run."""

    def __init__(self) -> None:
        self._pixels: dict[str, np.ndarray] = {}

    def pixels(self, http: requests.Session, base: str, url: str) -> np.ndarray:
        if url not in self._pixels:
            response = send(http, "GET", base + url)
            response.raise_for_status()
            with Image.open(io.BytesIO(response.content)) as img:
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            self._pixels[url] = rgb
        return self._pixels[url]


RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def send(http: requests.Session, method: str, url: str, *, patience_s: float = 120,
         **kwargs) -> requests.Response:
    """One request, retried as the browser's outbox retries it: after a connection error,
    a timeout, an answer cut off mid-body, a 408, a 429 or a 5xx, with exponential backoff
    (capped at 2 s, or the server's Retry-After when shorter) until ``patience_s`` has passed.
    Safe because every participant request is idempotent (a replayed trial is stored once)."""
    deadline = time.monotonic() + patience_s
    delay = 0.05
    while True:
        try:
            response = http.request(method, url, timeout=30, **kwargs)
            if response.status_code not in RETRY_STATUSES:
                return response
            wait = min(delay, float(response.headers.get("Retry-After", delay) or delay))
            failure = f"{response.status_code} {response.text[:200]}"
        # ChunkedEncodingError: the answer was cut off mid-body (its server died while
        # sending it, after a proxy had passed on the headers)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            wait, failure = delay, f"{type(exc).__name__}: {exc}"
        if time.monotonic() + wait > deadline:
            raise SimulationError(f"{method} {url}: gave up after {patience_s:.0f} s "
                                  f"({failure})")
        time.sleep(wait)
        delay = min(delay * 2, 2.0)


def _check(response: requests.Response) -> dict:
    if response.status_code >= 400:
        raise SimulationError(
            f"{response.request.method} {response.url}: "
            f"{response.status_code} {response.text[:200]}"
        )
    return response.json()


def run_participant(
    base_url: str,
    slug: str,
    pid: str,
    *,
    skill: float = 1.0,
    seed: int = 0,
    images: ImageCache | None = None,
    pilot: bool = False,
) -> SimResult:
    """One participant from entry to completion code; returns what the server answered."""
    base = base_url.rstrip("/")
    rng = np.random.default_rng(seed)
    images = images or ImageCache()
    http = requests.Session()
    params = {"PROLIFIC_PID": pid, "STUDY_ID": "SIMSTUDY", "SESSION_ID": f"S{seed}"}
    if pilot:
        params["pilot"] = "1"
    page = send(http, "GET", f"{base}/s/{slug}", params=params)
    if page.status_code != 200:
        raise SimulationError(f"entry failed: {page.status_code} {page.text[:200]}")
    match = TOKEN.search(page.text)
    if match is None:
        raise SimulationError("entry page carries no session token")
    http.headers["X-Assay-Session"] = match.group(1)

    def post(path: str, body: dict) -> dict:
        return _check(send(http, "POST", f"{base}/api/{path}", json=body))

    state = _check(send(http, "GET", f"{base}/api/state"))
    if state["status"] == "consent":
        post("consent", {"agree": True})
    if state["status"] in ("consent", "instructions"):
        post("instructions", {"seconds": float(rng.uniform(20, 60))})
    latencies: list[float] = []
    sent = 0
    paradigm = PARADIGMS[state["paradigm"]["id"]]
    options = paradigm.Options.model_validate(state["paradigm"])
    respond = paradigm.participant(options, rng, skill,
                                   lambda url: images.pixels(http, base, url))

    for trial in _path(state["trials"], state["practice"]["max_attempts"]):
        if trial["stored"]:
            continue
        answer = respond(trial["view"])
        rt = float(rng.lognormal(np.log(1800), 0.4))
        shown = datetime.now(UTC)
        body = {
            "trial_index": trial["index"],
            "answer": answer,
            "rt_ms": round(rt, 1),
            "presented_at": shown.isoformat(),
            "responded_at": (shown + timedelta(milliseconds=rt)).isoformat(),
        }
        start = time.perf_counter()
        post("trials", body)
        latencies.append((time.perf_counter() - start) * 1000)
        sent += 1
        if trial["phase"] == "practice":
            scored = paradigm.score(trial["correct"], paradigm.Answer.model_validate(answer))
            trial["_answered_correctly"] = scored >= 1.0
    answers = {}
    for q in state["questionnaire"]:
        answers[q["id"]] = q["options"][0] if q["kind"] == "choice" else "simulated"
    post("questionnaire", {"answers": answers})
    done = post("finish", {})
    return SimResult(pid, done["status"], done["code"], sent, latencies)


def _path(trials: list[dict], max_attempts: int) -> Iterable[dict]:
    """Practice attempts until one is all correct (or the cap), then every main trial.

    Lazy on purpose: the caller marks each practice trial's outcome before the next is drawn.
    """
    for attempt in range(1, max_attempts + 1):
        block = [t for t in trials if t["phase"] == "practice" and t["attempt"] == attempt]
        yield from block
        if all(t.get("_answered_correctly", False) for t in block):
            break
    yield from (t for t in trials if t["phase"] == "main")


def simulate(
    base_url: str, slug: str, n: int, *, workers: int = 8, seed: int = 0, prefix: str = "SIM"
) -> list[SimResult]:
    """N participants, ``workers`` at a time, with skills drawn around a typical person's."""
    rng = np.random.default_rng(seed)
    skills = rng.gamma(4.0, 0.3, size=n)
    cache = ImageCache()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(
                run_participant,
                base_url,
                slug,
                f"{prefix}{seed}x{i:05d}",
                skill=float(skills[i]),
                seed=seed * 100_003 + i,
                images=cache,
            )
            for i in range(n)
        ]
        return [f.result() for f in futures]
