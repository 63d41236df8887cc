"""Request size and rate limits: 413 before anything runs, 429 with Retry-After per
principal, buckets that refill with time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from proctor.clock import FrozenClock
from proctor.runtime import Runtime
from proctor.server import ServerConfig

from .conftest import BASE_URL, make_app
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio


@pytest.fixture
async def limited(runtime: Runtime) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    app, token = make_app(runtime, ServerConfig(max_body_bytes=4096, rate_per_second=0.5,
                                                rate_burst=3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=BASE_URL) as client:
        yield client, token


async def test_a_body_over_the_limit_is_refused_before_any_route_runs(
        limited: tuple[httpx.AsyncClient, str], runtime: Runtime) -> None:
    client, token = limited
    headers = {"Authorization": f"Bearer {token}"}
    big = {"sources": {"a.cedar": "x" * 5000}}
    response = await client.post("/v1/policies/revisions", headers=headers, json=big)
    assert_problem(response, 413, "request_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"sources": {"a.cedar": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    streamed = await client.post("/v1/policies/revisions", content=chunks(),
                                 headers={**headers, "Content-Type": "application/json"})
    assert_problem(streamed, 413, "request_too_large")
    assert [r.id for r in runtime.policies.list_revisions()] == [1]
    # a body under the limit gets through
    small = await client.post("/v1/policies/validate", headers=headers,
                              json={"sources": {"a.cedar": "permit (principal, action, "
                                                "resource);"}})
    assert small.status_code == 200


async def test_a_principal_over_its_rate_gets_429_until_its_bucket_refills(
        limited: tuple[httpx.AsyncClient, str], frozen: FrozenClock) -> None:
    client, token = limited
    headers = {"Authorization": f"Bearer {token}"}
    statuses = [(await client.get("/v1/whoami", headers=headers)).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited_response = await client.get("/v1/whoami", headers=headers)
    assert_problem(limited_response, 429, "rate_limited")
    assert limited_response.headers["retry-after"] == "2"
    frozen.advance(seconds=2)
    assert (await client.get("/v1/whoami", headers=headers)).status_code == 200
    # the public endpoints are not rate limited
    assert all([(await client.get("/healthz")).status_code == 200 for _ in range(10)])
