"""The agent's trace reaches proctor: the SDK sends the agent's ``traceparent`` with
``POST /v1/decide``, and the server's decision spans join that trace."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI

if importlib.util.find_spec("opentelemetry.sdk") is None:  # the `otel` extra
    if IN_CI:
        raise RuntimeError("the OpenTelemetry SDK is missing: CI syncs every extra")
    pytest.skip("the otel extra is not installed", allow_module_level=True)

from examples.frameworks.operator import OWNER
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from proctor import telemetry
from proctor.client import ProctorClient

from .conftest import Live


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.configure(tracer_provider=provider, meter_provider=MeterProvider())
    try:
        yield exporter
    finally:
        telemetry.reset()


def test_a_decision_asked_by_the_sdk_joins_the_agents_trace(
        live: Live, spans: InMemorySpanExporter) -> None:
    agent_id, key = live.operator.register_agent("support")
    agent_spans = InMemorySpanExporter()
    agent_provider = TracerProvider()  # the agent's own OpenTelemetry
    agent_provider.add_span_processor(SimpleSpanProcessor(agent_spans))
    tracer = agent_provider.get_tracer("support-agent")
    with ProctorClient(live.base, agent_id, key) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER),
                                   ["kb/search_articles"])
        with tracer.start_as_current_span("agent step") as step:
            verdict = client.decide(grant, "kb/search_articles", {"query": "refund policy"})
    assert verdict.is_allowed
    [server] = [s for s in spans.get_finished_spans()
                if s.name == "POST /v1/decide" and s.kind is SpanKind.SERVER]
    [decision] = [s for s in spans.get_finished_spans()
                  if s.name == "proctor.decision kb/search_articles"]
    assert server.context.trace_id == step.get_span_context().trace_id
    assert server.parent is not None
    assert server.parent.span_id == step.get_span_context().span_id
    assert decision.parent is not None and decision.parent.span_id == server.context.span_id
