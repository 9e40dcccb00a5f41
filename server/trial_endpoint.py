"""POST /api/trials as a bare WSGI handler in front of Flask.

Most of a study's requests are trial POSTs. For them Flask's request context, cookie session,
rate limiter and hooks cost about a third of the server's CPU and give nothing: the token is
a header, nothing is rendered, only entries are rate-limited. This handler does what a Flask
view would: verify the token, judge the body as every view does (server/bodies.py), store the
trial once (server/trials.py), answer JSON with the security headers, and a 503 with
Retry-After while the database is unreachable. Every other request goes on to Flask.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import RequestEntityTooLarge

from server.bodies import parse_body
from server.db import RETRY_AFTER_S, unavailable
from server.headers import SECURITY_HEADERS
from server.tokens import HEADER, verify
from server.trials import FlowError, TrialIn, frozen_session, record_trial

log = logging.getLogger(__name__)
PATH = "/api/trials"
_TOKEN_KEY = "HTTP_" + HEADER.upper().replace("-", "_")  # the header as WSGI names it

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
Answer = tuple[int, dict[str, Any], list[tuple[str, str]]]  # status, JSON body, extra headers


class TrialEndpoint:
    """WSGI middleware: serves ``PATH`` itself and passes everything else to ``wsgi_app``."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app, self.wsgi_app = app, wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.wsgi_app(environ, start_response)
        try:
            status, payload, extra = self.answer(environ)
        except Exception:
            log.exception("unhandled error on %s %s", environ.get("REQUEST_METHOD"), PATH)
            status, payload, extra = 500, {"error": "internal server error"}, []
        body = json.dumps(payload, separators=(",", ":")).encode()
        start_response(f"{status} {HTTPStatus(status).phrase}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            *SECURITY_HEADERS, *extra])
        return [body]

    def answer(self, environ: dict) -> Answer:
        if environ.get("REQUEST_METHOD") != "POST":
            return 405, {"error": f"{PATH} takes POST only"}, [("Allow", "POST")]
        token = environ.get(_TOKEN_KEY, "")
        public_id = verify(self.app.config["SECRET_KEY"], token) if token else None
        if public_id is None:
            return 401, {"error": f"missing or invalid session token ({HEADER} header)"}, []
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        try:
            body = read_body(environ, limit)
        except RequestEntityTooLarge:
            return 413, {"error": f"payload too large (limit {limit} bytes)"}, []
        try:
            trial = parse_body(TrialIn, environ.get("CONTENT_TYPE", ""), body)
            engine = self.app.extensions["assay.engine"]
            frozen = frozen_session(engine, public_id)
            if frozen is None:
                return 401, {"error": "unknown session"}, []
            duplicate = record_trial(engine, frozen, trial)
        except FlowError as exc:  # nothing was stored
            return exc.status, {"error": str(exc), **exc.extra}, []
        except DBAPIError as exc:
            if not unavailable(exc):
                raise
            log.warning("database unavailable on POST %s: %s", PATH,
                        type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
            return 503, {"error": "the database is unavailable for a moment; retry shortly"}, \
                [("Retry-After", str(RETRY_AFTER_S))]
        return 200, {"stored": True, "duplicate": duplicate}, []


def read_body(environ: dict, limit: int) -> bytes:
    """The request body; RequestEntityTooLarge past ``limit`` bytes. A body of declared length
    (every browser's fetch) is read in one call. A chunked one is read to its end only from a
    server that ends the stream (``wsgi.input_terminated``; else reading could hang), one
    byte past the limit at most, so that it too gets a 413 rather than a truncated body."""
    stream, declared = environ["wsgi.input"], environ.get("CONTENT_LENGTH", "")
    if declared.isdigit():
        if int(declared) > limit:
            raise RequestEntityTooLarge()
        return stream.read(int(declared))
    if not environ.get("wsgi.input_terminated"):
        return b""
    chunks, size = [], 0
    while size <= limit and (chunk := stream.read(limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)
