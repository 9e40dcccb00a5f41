"""The production server: granian serving ``server.wsgi:app``, set up from ASSAY_* variables.

    assay serve --production      (deploy/entrypoint.sh, deploy/assay.service)

granian, not gunicorn: on 2 cores it stored 2.2-2.8x the trials per second at a third of the
server CPU per trial, and held the 1,000-participant open loop that gunicorn's gthread worker
lost (benchmarks/wsgi_servers.py). Its HTTP handling is in Rust; Python runs only the app.

Every setting comes from the environment, so one launcher serves every machine. No state lives
in a worker: sessions, trials and assignment are in PostgreSQL, rate-limit counters in Redis
(REDIS_URL), so any number of workers on any number of machines can serve the same study.

Personal data: participants arrive with ``?PROLIFIC_PID=...`` in the entry URL. The access log
(server/access_log.py, not granian's) therefore writes the path and never the query string,
and every log line (the app's own, granian's and the access log's) is scrubbed of query
strings and control characters, so that neither a ``%0a`` in a URL nor an exception message
can forge a line or leak an ID.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from server.config import env_int

APP = "server.wsgi:app"

# A query string, up to the next space or quote: "?" right after a URL path, or "?key=".
_QUERY = re.compile(r"(/[^\s?\"'<>]*)?\?(?(1)|(?=[\w.~-]+=))[^\s\"'<>]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def scrub(text: str) -> str:
    """Replace every URL query string in ``text`` with ``?[redacted]`` (and nothing else: a
    question mark in prose is not a query string), and escape control characters, so that a
    logged value cannot start a forged line nor put a NUL in the log."""
    text = _QUERY.sub(lambda m: f"{m.group(1) or ''}?[redacted]", text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class ScrubFilter(logging.Filter):
    """Applies :func:`scrub` to a record's formatted message (tracebacks keep their lines;
    they name code, not requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def _bind(env: Mapping[str, str]) -> tuple[str, int]:
    raw = env.get("ASSAY_BIND", "").strip() or "127.0.0.1:8000"
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"ASSAY_BIND must be HOST:PORT with a port from 1 to 65535, not {raw!r}")
    return host.strip("[]"), int(port)


def log_config(level: str) -> dict[str, Any]:
    """granian's logging and the app's own logger ("server"), through the scrubber;
    each line names the process, so that a line can be traced to its worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"scrub": {"()": ScrubFilter}},
        "formatters": {
            "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"},
        },
        "handlers": {
            "generic": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                        "formatter": "generic", "filters": ["scrub"]},
        },
        "loggers": {
            "_granian": {"handlers": ["generic"], "level": level, "propagate": False},
            "server": {"handlers": ["generic"], "level": level, "propagate": False},
        },
    }


def settings(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """granian's keyword arguments from the environment; a bad value raises ValueError naming
    the variable.

    ASSAY_BIND (HOST:PORT, default 127.0.0.1:8000), ASSAY_WORKERS (default: one per core),
    ASSAY_THREADS (threads per worker that run the app, default 2), ASSAY_BACKLOG (2048),
    ASSAY_LOG_LEVEL (info), ASSAY_GRACEFUL_TIMEOUT
    (seconds a stopping worker may finish its requests, 30), ASSAY_WORKERS_LIFETIME (seconds
    before a worker is replaced, 0: never).
    """
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    host, port = _bind(env)
    level = env.get("ASSAY_LOG_LEVEL", "info").strip().lower() or "info"
    if level not in LogLevels.__members__:
        raise ValueError(f"ASSAY_LOG_LEVEL must be one of {', '.join(LogLevels.__members__)}, "
                         f"not {level!r}")
    workers = env_int(env, "ASSAY_WORKERS", os.cpu_count() or 1)
    # Threads per worker that run the app. Each may hold one database connection, so keep
    # machines x workers x threads below PostgreSQL's max_connections (or use pgbouncer).
    # Two, not more: a worker's threads contend for its GIL (on 2 cores, 4 measured slower).
    threads = env_int(env, "ASSAY_THREADS", 2)
    if workers < 1 or threads < 1:
        raise ValueError("ASSAY_WORKERS and ASSAY_THREADS must be at least 1")
    lifetime = env_int(env, "ASSAY_WORKERS_LIFETIME", 0)
    if 0 < lifetime < 60:
        raise ValueError("ASSAY_WORKERS_LIFETIME must be 0 (never) or at least 60 seconds")
    return dict(
        target=APP,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,  # behind a proxy, or to browsers over plain HTTP/1.1
        websockets=False,
        workers=workers,
        blocking_threads=threads,
        backlog=max(128, env_int(env, "ASSAY_BACKLOG", 2048)),
        http1_settings=HTTP1Settings(header_read_timeout=30_000, keep_alive=True),
        log_level=LogLevels(level),
        log_dictconfig=log_config(level.upper()),
        log_access=False,  # the app writes its own, for a tenth of the CPU (server.wsgi)
        # A worker that dies (a crash, the OOM killer, kill -9) is replaced; in-flight
        # requests on it fail, and browsers' outboxes retry them.
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=max(1, env_int(env, "ASSAY_GRACEFUL_TIMEOUT", 30)),
        workers_lifetime=lifetime or None,
    )


def serve(env: Mapping[str, str] = os.environ) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT (a graceful stop)."""
    from granian import Granian

    Granian(**settings(env)).serve()
