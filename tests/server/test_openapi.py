"""The participant API's OpenAPI description, and property-based fuzzing from it
(schemathesis): no generated request, valid or not, gets a 500."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from experiments.paradigms import PARADIGMS
from server.openapi import ROUTES
from server.tokens import HEADER
from tests.server.participant_client import Participant


@pytest.fixture
def participant(app, launch) -> Participant:
    p = Participant(app.test_client(), launch(), pid="P-fuzz")
    p.start()
    return p


def test_the_description_is_served_and_names_every_paradigm_answer(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    description = response.json
    assert set(description["paths"]) == {"/api/state", "/api/consent", "/api/instructions",
                                         "/api/trials", "/api/questionnaire", "/api/finish",
                                         "/api/withdraw", "/api/screening"}
    answer = description["components"]["schemas"]["TrialIn"]["properties"]["answer"]
    named = {ref["$ref"].rsplit("/", 1)[-1] for ref in answer["anyOf"]}
    assert named == {p.Answer.__name__ for p in PARADIGMS.values()}
    assert description["components"]["securitySchemes"]["session"]["name"] == HEADER


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path, method", [(path, method) for path, (method, *_) in
                                           ROUTES.items()])
def test_no_generated_request_gets_a_500(app, participant, path, method, mode):
    """Bodies from the schema and beyond it (schemathesis mutates them), sent with the
    participant's token in whatever state earlier examples left the session."""
    operation = schemathesis.openapi.from_wsgi("/api/openapi.json", app)[path][method]
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        response = case.call(headers={HEADER: participant.token})
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])

    fuzz()
    assert statuses and 500 not in statuses
    if mode is GenerationMode.NEGATIVE and ROUTES[path][1] is not None:  # ill-fitting bodies
        assert 400 in statuses or 415 in statuses, statuses
