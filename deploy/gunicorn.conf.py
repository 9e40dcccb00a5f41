"""gunicorn settings for Assay: ``gunicorn -c deploy/gunicorn.conf.py server.wsgi:app``.

Every setting can be changed through the environment, so one file serves every machine.
No state lives in a worker: sessions, trials and assignment are in PostgreSQL, rate-limit
counters in Redis (REDIS_URL), so any number of workers on any number of machines can serve
the same study.

Personal data: participants arrive with ``?PROLIFIC_PID=...`` in the entry URL. The access log
format below therefore logs the path (``%(U)s``) and never the query string or the raw request
line (``%(r)s``, ``%(q)s``) or the referrer; and the logger class scrubs query strings from
anything gunicorn writes to its error log (gunicorn logs the full URI of a request whose
handling crashed).
"""

import multiprocessing
import os
import re
from urllib.parse import quote

from gunicorn.glogging import Logger

bind = os.environ.get("ASSAY_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("ASSAY_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
# Threads per worker. Each thread may hold one database connection, so keep
# machines x workers x threads below PostgreSQL's max_connections (or use pgbouncer).
# Two, not more: a worker's threads contend for its GIL. On 2 cores, in quiet back-to-back
# runs of benchmarks/server_load.py, 4 threads per worker stored 0.5-0.7x the trials per
# second of 2, at 1.4-2x the CPU per trial, and lost the 1,000-participant open loop that 2
# held (with other load on the machine the two were alike). Idle keep-alive connections
# wait in the worker's poller, not in a thread.
threads = int(os.environ.get("ASSAY_THREADS", 2))
preload_app = False  # each worker builds its own app, engine and connection pool after fork
timeout = int(os.environ.get("ASSAY_TIMEOUT", 30))  # a worker silent this long is restarted
graceful_timeout = int(os.environ.get("ASSAY_GRACEFUL_TIMEOUT", 30))
keepalive = int(os.environ.get("ASSAY_KEEPALIVE", 5))
max_requests = int(os.environ.get("ASSAY_MAX_REQUESTS", 0))  # 0: workers are not recycled
max_requests_jitter = max_requests // 10
limit_request_line = 4094
backlog = 2048
# gunicorn >= 27 opens a control socket at one fixed path per user; two servers on a machine
# would share it. Off unless ASSAY_CONTROL_SOCKET names a path (older gunicorns ignore both).
control_socket = os.environ.get("ASSAY_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

loglevel = os.environ.get("ASSAY_LOG_LEVEL", "info")
accesslog = os.environ.get("ASSAY_ACCESS_LOG", "-")  # "-": stdout (journald under systemd)
errorlog = os.environ.get("ASSAY_ERROR_LOG", "-")
# Path only (%(U)s), never %(r)s / %(q)s (query string) or %(f)s (referrer): see above.
# %(p)s is the worker's pid; %(M)s the duration in ms.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms %(p)s'

# A query string, up to the next space or quote: "?" right after a URL path, or "?key=".
_QUERY = re.compile(r"(/[^\s?\"'<>]*)?\?(?(1)|(?=[\w.~-]+=))[^\s\"'<>]+")
# Characters a logged path keeps as they are; the rest is percent-encoded, so that a "%0a"
# in a URL cannot start a forged log line, nor a "%00" put a NUL in the log.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def scrub(text: str) -> str:
    """Replace every URL query string in ``text`` with ``?[redacted]`` (and nothing else:
    a question mark in prose is not a query string)."""
    return _QUERY.sub(lambda m: f"{m.group(1) or ''}?[redacted]", text)


def logged_path(path_info: str) -> str:
    """A WSGI PATH_INFO (decoded, latin-1) percent-encoded again for the log."""
    return quote(path_info.encode("latin-1", "replace"), safe=_PATH_SAFE)


class _ScrubQueries:
    """A logging filter that removes query strings from a record's formatted message."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = scrub(message), ()
        return True


class ScrubbingLogger(Logger):
    """gunicorn's logger, with query strings scrubbed from its error and access logs and
    paths re-encoded in the access log."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.addFilter(_ScrubQueries())

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = logged_path(environ.get("PATH_INFO", ""))
        return atoms


logger_class = ScrubbingLogger
