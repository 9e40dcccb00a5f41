"""What granian hands the app, for tests/server/test_serve.py: the production app
(server.wsgi), and at ``/environ-probe`` the names of server.config.SECRET_VARIABLES that are in
the request's WSGI environ."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from server.config import SECRET_VARIABLES
from server.wsgi import app as assay_app


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != "/environ-probe":
        return assay_app(environ, start_response)
    body = json.dumps([name for name in SECRET_VARIABLES if name in environ]).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
