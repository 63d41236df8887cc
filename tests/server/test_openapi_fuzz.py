"""Schemathesis against the published OpenAPI document, in process: valid and invalid
requests to every operation, as the admin and with no credentials. No answer is a 5xx;
every answer conforms to what the document says for that operation and status, so
every 4xx is a problem document whose ``code`` the operation lists.

The operations are fuzzed in ``SHARDS`` tests, one each third of them, so that parallel
workers share the work; the last shard to finish checks what all of them saw together."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
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
# Per operation and mode, as the admin. 5 reach what 10 did (measured in December with
# coverage.py, all three shards: the same 11,577 branch arcs of proctor, and the same
# operation, credentials, status and problem code for every answer); 3 lose some of both.
MAX_EXAMPLES = 5
# Without credentials every answer is 401 or 422; 2 no longer reach every operation's
# malformed-credentials code.
ANONYMOUS_EXAMPLES = 3
PROBLEM = "application/problem+json"
SHARDS = 3


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


@pytest.fixture(scope="session")
def seen_by_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each shard writes the statuses it saw: a directory of this test run, shared
    by its parallel workers."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    folder = base.parent / f"openapi-fuzz-{run}" if run else base / "openapi-fuzz"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_operation_answers_as_documented(fuzzed: tuple[Any, str],
                                               ticking: Callable[[], None],
                                               runtime: Runtime, shard: int,
                                               seen_by_shards: Path) -> None:
    schema, token = fuzzed
    operations = sorted((result.ok() for result in schema.get_all_operations()),
                        key=lambda operation: operation.label)
    assert len(operations) >= 25
    statuses: dict[int, int] = {}
    for operation in operations[shard::SHARDS]:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, {"Authorization": f"Bearer {token}"}, statuses, MAX_EXAMPLES,
                 ticking)
            _run(operation, mode, {}, statuses, ANONYMOUS_EXAMPLES, ticking)
    assert not any(status >= 500 for status in statuses)
    # every refusal and change the fuzzing caused was audited, and the chain holds
    assert verify_store(runtime.store, {}).is_valid
    # together, the shards saw every kind of answer (checked once every shard has written)
    written = seen_by_shards / f"shard-{shard}.json"
    written.with_suffix(".tmp").write_text(json.dumps(sorted(statuses)))
    written.with_suffix(".tmp").replace(written)
    shards = sorted(seen_by_shards.glob("shard-*.json"))
    if len(shards) == SHARDS:
        seen = {status for path in shards for status in json.loads(path.read_text())}
        assert {200, 401, 404, 422} <= seen, seen


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
