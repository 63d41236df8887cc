"""Schemathesis against the published OpenAPI document, in process: valid and invalid
requests to every operation, as the admin and with no credentials. No answer is a 5xx;
every answer conforms to what the document says for that operation and status, so
every 4xx is a problem document whose ``code`` the operation lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from proctor.audit import verify_store
from proctor.clock import FrozenClock
from proctor.runtime import Runtime
from proctor.server import ServerConfig

from .conftest import make_app

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
MAX_EXAMPLES = 10  # per operation and mode, as the admin
ANONYMOUS_EXAMPLES = 3  # without credentials every answer is 401 or 422
PROBLEM = "application/problem+json"


@pytest.fixture
def fuzzed(runtime: Runtime) -> Iterator[tuple[Any, str]]:
    app, token = make_app(runtime, ServerConfig(rate_per_second=100_000, rate_burst=100_000))
    yield schemathesis.openapi.from_asgi("/openapi.json", app), token


@pytest.fixture
def ticking(frozen: FrozenClock) -> Callable[[], None]:
    """Hypothesis resets the `random` module for every example, and audit event ids take
    their random part from it: each example runs a millisecond later, so ids stay unique."""
    def tick() -> None:
        frozen.advance(seconds=0.001)

    return tick


def _problem_is_documented(response: Any, case: Case[Any]) -> None:
    """Every 4xx is a problem whose ``type`` is derived from its ``code``."""
    if 400 <= response.status_code < 500:
        assert response.headers["content-type"][0].startswith(PROBLEM), case.path
        body = response.json()
        assert body["type"] == f"urn:proctor:problem:{body['code']}"
        assert body["status"] == response.status_code


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_operation_answers_as_documented(fuzzed: tuple[Any, str],
                                               ticking: Callable[[], None],
                                               runtime: Runtime) -> None:
    schema, token = fuzzed
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    statuses: dict[int, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, {"Authorization": f"Bearer {token}"}, statuses, MAX_EXAMPLES,
                 ticking)
            _run(operation, mode, {}, statuses, ANONYMOUS_EXAMPLES, ticking)
    assert not any(status >= 500 for status in statuses)
    assert {200, 401, 404, 422} <= set(statuses), statuses
    # every refusal and change the fuzzing caused was audited, and the chain holds
    assert verify_store(runtime.store, {}).is_valid


def _run(operation: Any, mode: GenerationMode, headers: dict[str, str],
         statuses: dict[int, int], examples: int, tick: Callable[[], None]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case[Any]) -> None:
        tick()
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        _problem_is_documented(response, case)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    try:
        check()
    except Unsatisfiable:
        # no parameters and no body: there is nothing to make invalid
        assert mode is GenerationMode.NEGATIVE, operation.label
