"""The OpenAPI description of the participant API, generated from the request models and
the paradigms' answer models (so that it cannot drift from what the server validates).

Served at /api/openapi.json; the fuzzing tests (schemathesis) read it to generate requests.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from experiments.paradigms import PARADIGMS
from server.flow import ConsentIn, InstructionsIn, QuestionnaireIn, ScreeningIn
from server.tokens import HEADER
from server.trials import TrialIn

REF = "#/components/schemas/{model}"
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
STATUS = {"type": "object", "properties": {"status": {"type": "string"}}}
# path -> (method, request model or None, what a 200 carries, summary)
ROUTES: dict[str, tuple[str, type[BaseModel] | None, dict, str]] = {
    "/api/state": ("get", None, {"type": "object"},
                   "the session's state, plan views and progress (rebuilds the timeline)"),
    "/api/screening": ("post", ScreeningIn, {
        "type": "object", "properties": {"status": {"type": "string"},
                                         "reason": {"type": "string"},
                                         "redirect_url": {"type": ["string", "null"]}}},
        "before consent: the device or window fails the study's screening (no code)"),
    "/api/consent": ("post", ConsentIn, STATUS, "agree or decline (declining is final)"),
    "/api/instructions": ("post", InstructionsIn, STATUS, "the instructions were read"),
    "/api/trials": ("post", TrialIn, {
        "type": "object", "properties": {"stored": {"type": "boolean"},
                                         "duplicate": {"type": "boolean"}}},
        "store one trial exactly once (a replay with the same answer is a no-op)"),
    "/api/questionnaire": ("post", QuestionnaireIn, STATUS, "the closing questionnaire"),
    "/api/finish": ("post", None, {
        "type": "object", "properties": {"status": {"type": "string"},
                                         "code": {"type": ["string", "null"]},
                                         "redirect_url": {"type": ["string", "null"]}}},
        "close the session once every trial is stored; its completion code"),
    "/api/withdraw": ("post", None, {
        "type": "object", "properties": {"status": {"type": "string"},
                                         "deleted": {"type": "integer"}}},
        "the participant withdraws: their responses are deleted"),
}
ERRORS = {
    "400": "the body does not fit: the message names the field",
    "401": "missing, forged or unknown session token",
    "409": "the request does not fit the session's state (e.g. trials still missing)",
    "413": "payload too large",
    "415": "the body is not JSON",
    "503": "the database is unavailable for a moment: retry after Retry-After seconds",
}


@functools.cache
def openapi() -> dict[str, Any]:
    answers = [p.Answer for p in PARADIGMS.values()]
    models = dict.fromkeys((ScreeningIn, ConsentIn, InstructionsIn, QuestionnaireIn, TrialIn,
                             *answers))
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    components = schemas.get("$defs", {})
    # the answer is checked by the session's paradigm: one of theirs
    components["TrialIn"]["properties"]["answer"] = {
        "anyOf": [{"$ref": REF.format(model=a.__name__)} for a in dict.fromkeys(answers)]}
    paths: dict[str, Any] = {}
    for path, (method, model, ok, summary) in ROUTES.items():
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": path.rsplit("/", 1)[-1] + "_" + method,
            "security": [{"session": []}],
            "responses": {
                "200": {"description": "done",
                        "content": {"application/json": {"schema": ok}}},
                **{code: {"description": why,
                          "content": {"application/json": {"schema": ERROR}}}
                   for code, why in ERRORS.items()},
            },
        }
        if model is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": REF.format(model=model.__name__)}}}}
        paths[path] = {method: operation}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Assay participant API", "version": "1",
                 "description": "What the browser sends during a participant's session. "
                                "Every request carries the signed session token that the "
                                "entry page hands out."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"session": {"type": "apiKey", "in": "header",
                                            "name": HEADER}},
        },
    }
