"""One HTTP exchange on a keep-alive connection, retried as the browser's outbox retries
(connection errors, 408, 429, 5xx, with backoff): shared by the load benchmark's drivers
of Assay and of psiTurk, so that both are driven alike."""

from __future__ import annotations

import http.client
import time


def request(conn: http.client.HTTPConnection, method: str, path: str, body: str | None,
            headers: dict[str, str], tries: int = 50) -> tuple[int, bytes]:
    """(status, body) of the first answer worth keeping; RuntimeError after ``tries``."""
    for attempt in range(tries):
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            data = response.read()
        except (ConnectionError, http.client.HTTPException, TimeoutError):
            conn.close()
            # a keep-alive connection the server closed while idle: reopen it at once, as
            # browsers do; a server that keeps failing gets backoff
            if attempt:
                time.sleep(min(0.05 * 2 ** attempt, 2))
            continue
        if response.status >= 500 or response.status in (408, 429):
            time.sleep(min(0.05 * 2 ** attempt, 2))
            continue
        return response.status, data
    raise RuntimeError(f"{method} {path}: no answer after {tries} tries")
