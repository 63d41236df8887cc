"""The HTTP request count: a request is counted before its answer goes out."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from proctor.clock import SystemClock
from proctor.server.metrics import Metrics, MetricsMiddleware


def _count(metrics: Metrics, status: str) -> float:
    assert metrics.registry is not None
    value = metrics.registry.get_sample_value(
        "proctor_http_requests_total", {"method": "GET", "route": "unmatched", "status": status})
    return value or 0.0


def _run(app: Any, metrics: Metrics) -> list[tuple[str, float]]:
    """The messages the server sent, each with the 200s counted when it went out."""
    seen: list[tuple[str, float]] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        seen.append((message["type"], _count(metrics, "200")))

    middleware = MetricsMiddleware(app, metrics=metrics, clock=SystemClock())
    scope: Scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return seen


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    return Metrics()


def test_a_request_is_counted_before_its_answer_reaches_the_client(metrics: Metrics) -> None:
    # counted after the body went out, a client that had its answer and asked /metrics at
    # once (another worker) could find it missing (seen: 19 of 20 with two workers)
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert _run(app, metrics) == [("http.response.start", 1.0), ("http.response.body", 1.0)]
    assert _run(app, metrics)[0] == ("http.response.start", 2.0)
    assert _count(metrics, "500") == 0


def test_a_request_that_fails_before_answering_is_one_500(metrics: Metrics) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _run(app, metrics)
    assert (_count(metrics, "500"), _count(metrics, "200")) == (1.0, 0.0)
