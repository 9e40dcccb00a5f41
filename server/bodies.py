"""JSON request bodies as pydantic models, with errors that name the offending field.

Shared by the Flask views and the bare trial endpoint (server/trial_endpoint.py), so that a
body is judged the same way whichever serves it."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from server.trials import FlowError

M = TypeVar("M", bound=BaseModel)


def is_json(content_type: str) -> bool:
    """Whether a Content-Type header names JSON, as Flask's ``request.is_json`` decides."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json"))


def parse_body(model: type[M], content_type: str, body: bytes) -> M:
    """The body as ``model``; a FlowError (415 or 400) that says what is wrong with it."""
    if not is_json(content_type):
        raise FlowError("request body must be JSON (Content-Type: application/json)", status=415)
    try:
        data = json.loads(body)
    except RecursionError:  # e.g. thousands of nested brackets: the parser gives up
        raise FlowError("request body is nested too deeply", status=400) from None
    except ValueError:  # not JSON, or not UTF-8
        raise FlowError("request body is not valid JSON", status=400) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise FlowError(f"{where}: {err['msg']}", status=400) from None
