"""The production server's access log: one line per request, written straight to stdout.

granian has an access log of its own, but it goes through the logging module: a LogRecord, a
formatter, the scrub filter and a handler's lock for every line. That cost about 100 µs of
CPU per line on one thread, and 0.3-0.45 ms per trial under load on 2 cores, a quarter of the
server's CPU per trial (two servers, log on and off, the same interleaved load, three times:
1.56-1.73 against 1.13-1.31 ms). This middleware writes the same line for about 9 µs.

Each line is a single write(2), so that the lines of concurrent requests (the worker's
threads and the other workers share stdout) never interleave.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping

from server.serve import scrub

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def access_log_on(env: Mapping[str, str] = os.environ) -> bool:
    """ASSAY_ACCESS_LOG: on unless "0" (behind a proxy that logs requests already)."""
    return env.get("ASSAY_ACCESS_LOG", "1").strip() != "0"


class AccessLog:
    """WSGI middleware that logs ``time addr "METHOD path protocol" status dt_ms pid``.

    The path, never the query string: participants arrive with their platform ID in it.
    The path is decoded, so a ``%0a`` or ``%00`` in a URL would start a forged line or put a
    NUL in the log; such a line, or one with a "?", goes through the scrubber
    (server/serve.py) that every other log line passes."""

    def __init__(self, app: WSGIApp, fd: int = 1) -> None:
        self.app, self.fd = app, fd
        self._second: tuple[int, str] = (-1, "")  # the last second seen, formatted

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started, status = time.perf_counter(), "500"  # if the app raises

        def recording(line: str, headers: list, exc_info=None) -> Callable:
            nonlocal status
            status = line[:3]
            return start_response(line, headers, exc_info)

        try:
            return self.app(environ, recording)
        finally:
            self.write(environ, status, time.perf_counter() - started)

    def write(self, environ: dict, status: str, seconds: float) -> None:
        now = time.time()
        second, stamp = self._second
        if int(now) != second:
            second = int(now)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second, stamp
        text = (f'{environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD", "")} '
                f'{environ.get("PATH_INFO", "")} {environ.get("SERVER_PROTOCOL", "")}" '
                f"{status} {seconds * 1000:.1f}ms")
        if "?" in text or not text.isprintable():
            text = scrub(text)
        line = f"{stamp},{int(now * 1000) % 1000:03d} {text} {os.getpid()}\n"
        with contextlib.suppress(OSError):  # a closed or full log must not fail the request
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))
