"""OpenTelemetry: the span tree of a gateway call (agent → decision → upstream), joined to
the agent's trace from the request's ``_meta`` (or its HTTP ``traceparent`` header); no
argument, token or proof in any attribute; the OTLP exporter against a local receiver;
and nothing at all when off."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proctor import telemetry
from proctor.clock import FrozenClock, SystemClock
from proctor.enforcement import ToolCall
from tests.audit.receivers import free_port
from tests.gateway.conftest import UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import Gate, agent, gateway_on, wrapped

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exported() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    assert telemetry.configure(tracer_provider=tracer_provider,
                               meter_provider=MeterProvider(metric_readers=[metrics]))
    try:
        yield spans, metrics
    finally:
        telemetry.reset()


@pytest.mark.anyio
async def test_a_gateway_call_is_a_span_tree_in_the_agents_trace_without_its_arguments(
        deployment: Deployment, tmp_path: Path,
        exported: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    spans, metrics = exported
    grant = deployment.grant()
    clock = FrozenClock(SystemClock().now())
    gate = Gate(tmp_path)
    secret_text = "customer card 4242-4242"
    outcome: dict[str, Any] = {}
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, _gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client:

            async def call() -> None:
                meta: Any = {"traceparent": TRACEPARENT}
                outcome["result"] = await client.call_tool("echo", {"text": secret_text},
                                                           meta=meta)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                async with gate.upstream_waiting():
                    pass
    assert outcome["result"].structured_content["text"] == secret_text
    finished = spans.get_finished_spans()
    by_name = {(s.name, s.kind): s for s in finished}
    server = by_name[("tools/call echo", SpanKind.SERVER)]
    decision = by_name[("proctor.decision test/echo", SpanKind.INTERNAL)]
    upstream = by_name[("tools/call echo", SpanKind.CLIENT)]
    assert format(server.context.trace_id, "032x") == TRACE_ID  # the agent's trace
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert decision.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert upstream.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    on_server, on_decision = dict(server.attributes or {}), dict(decision.attributes or {})
    assert on_server["mcp.method.name"] == "tools/call"
    assert on_server["gen_ai.operation.name"] == "execute_tool"
    assert str(on_server["mcp.session.id"]).startswith("gws_")
    assert (on_decision["proctor.decision"], on_decision["proctor.code"]) == ("allow", "allow")
    assert on_decision["proctor.agent"] == "spiffe://acme.example/agent/coder"
    assert on_decision["proctor.policy_ids"]
    values = json.dumps([dict(s.attributes or {}) for s in finished])
    for forbidden in (secret_text, grant.token, grant.token[:40]):
        assert forbidden not in values
    data = metrics.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"proctor.decisions", "proctor.decision.duration", "proctor.gateway.sessions"
            } <= names


@pytest.mark.anyio
async def test_an_http_gateway_call_joins_the_trace_of_its_traceparent_header(
        deployment: Deployment, tmp_path: Path,
        exported: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    spans, _metrics = exported
    grant = deployment.grant()
    clock = FrozenClock(SystemClock().now())
    gate = Gate(tmp_path)
    outcome: dict[str, Any] = {}
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, _gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock,
                headers={"traceparent": TRACEPARENT}) as client:

            async def call() -> None:  # no `_meta`: the header names the trace
                outcome["result"] = await client.call_tool("echo", {"text": "hi"})

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                async with gate.upstream_waiting():
                    pass
    assert outcome["result"].structured_content["text"] == "hi"
    by_name = {(s.name, s.kind): s for s in spans.get_finished_spans()}
    server = by_name[("tools/call echo", SpanKind.SERVER)]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    decision = by_name[("proctor.decision test/echo", SpanKind.INTERNAL)]
    assert decision.parent.span_id == server.context.span_id  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_an_agents_invalid_tracestate_is_dropped_unlogged_and_a_valid_one_goes_on(
        deployment: Deployment, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        exported: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    forged = "FORGED\nERROR proctor: a line the agent wrote"
    clock, gate = FrozenClock(SystemClock().now()), Gate(tmp_path)
    with anyio.fail_after(WAIT), caplog.at_level(logging.DEBUG):
        async with gateway_on(deployment, clock, gate) as (public, _gateway), agent(
                f"{public}/mcp/test", deployment.grant(), deployment, clock) as client:

            async def call(state: str) -> None:
                meta: Any = {"traceparent": TRACEPARENT, "tracestate": state}
                await client.call_tool("echo", {"text": "hi"}, meta=meta)

            async with anyio.create_task_group() as tasks:  # the upstream starts
                tasks.start_soon(call, f"vendor=1,{forged}=x")
                async with gate.upstream_waiting():
                    pass
            await call("vendor=1,other@tenant=a b")
    upstream = [s for s in exported[0].get_finished_spans()
                if (s.name, s.kind) == ("tools/call echo", SpanKind.CLIENT)]
    # the upstream call's context (its `_meta`) carries a tracestate only if it was valid
    assert [dict(s.context.trace_state) for s in upstream] == [
        {}, {"vendor": "1", "other@tenant": "a b"}]
    assert {format(s.context.trace_id, "032x") for s in upstream} == {TRACE_ID}
    # OpenTelemetry's own warning quoted the agent's member, its newline too
    ours = [r.getMessage() for r in caplog.records
            if r.name.startswith(("opentelemetry", "proctor"))]
    assert not [message for message in ours if "FORGED" in message]


@pytest.mark.parametrize(("carrier", "joined"), [
    ({"traceparent": TRACEPARENT}, {"traceparent": TRACEPARENT}),
    ({"traceparent": TRACEPARENT.upper()}, {}),
    ({"traceparent": "ff" + TRACEPARENT[2:]}, {}),
    ({"traceparent": TRACEPARENT + "-more"}, {}),  # version 00 ends there
    ({"traceparent": "01" + TRACEPARENT[2:] + "-more"}, {"traceparent": "01" + TRACEPARENT[2:]}),
    ({"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"}, {}),
    ({"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"}, {}),
    ({"traceparent": ["not", "text"]}, {}),
    ({"traceparent": TRACEPARENT, "tracestate": ",".join(f"k{i}=v" for i in range(32))},
     {"traceparent": TRACEPARENT, "tracestate": ",".join(f"k{i}=v" for i in range(32))}),
    ({"traceparent": TRACEPARENT, "tracestate": ",".join(f"k{i}=v" for i in range(33))},
     {"traceparent": TRACEPARENT}),
    ({"traceparent": TRACEPARENT, "tracestate": "a=" + "b" * 257}, {"traceparent": TRACEPARENT}),
    ({"traceparent": TRACEPARENT, "tracestate": ",".join(["k=" + "v" * 200] * 3)},
     {"traceparent": TRACEPARENT}),  # over 512 characters
    ({"traceparent": TRACEPARENT, "tracestate": "a=1,a=2"}, {"traceparent": TRACEPARENT}),
    ({"traceparent": TRACEPARENT, "tracestate": "A=1"}, {"traceparent": TRACEPARENT}),
    ({"traceparent": TRACEPARENT, "tracestate": "a=1 "},
     {"traceparent": TRACEPARENT, "tracestate": "a=1 "}),  # spaces around a member
    ({"traceparent": TRACEPARENT, "tracestate": "a=x=y"}, {"traceparent": TRACEPARENT}),
    ({"tracestate": "a=1"}, {}),
])
def test_trace_context_keeps_only_what_w3c_trace_context_allows(
        carrier: dict[str, Any], joined: dict[str, str]) -> None:
    assert telemetry.trace_context(carrier) == joined


class _OtlpReceiver:
    """A local OTLP/HTTP endpoint: each POST's path and protobuf body."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.anyio
async def test_a_wrapper_calls_decision_span_is_the_calls_child(
        deployment: Deployment,
        exported: tuple[InMemorySpanExporter, InMemoryMetricReader]) -> None:
    # the wrapper decides on its event loop (or a worker thread): the call's context goes along
    spans, _ = exported
    async with wrapped(deployment, deployment.grant(), UPSTREAM, server="test") as client:
        with anyio.fail_after(WAIT):
            result = await client.call_tool("echo", {"text": "traced"})
    assert not result.is_error
    by_name = {(s.name, s.kind): s for s in spans.get_finished_spans()}
    server = by_name[("tools/call echo", SpanKind.SERVER)]
    decision = by_name[("proctor.decision test/echo", SpanKind.INTERNAL)]
    assert decision.parent is not None
    assert decision.parent.span_id == server.context.span_id
    assert decision.context.trace_id == server.context.trace_id


def test_the_otlp_exporter_configured_by_otel_variables_sends_decision_spans(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = _OtlpReceiver()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_SERVICE_NAME": "proctor-test"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        assert telemetry.configure()
        verdict = deployment.runtime.enforcer.decide_call(
            "not.a.grant", "x", ToolCall("time/get_current_time", {"timezone": "UTC"}))
        telemetry.flush()
    finally:
        telemetry.reset()
        receiver.close()
    assert verdict.code == "grant_malformed"
    [(_path, body)] = [p for p in receiver.posts if p[0] == "/v1/traces"]
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "proctor-test"
    [span] = [s for scope in resource.scope_spans for s in scope.spans]
    attributes = {a.key: a.value for a in span.attributes}
    assert span.name == "proctor.decision time/get_current_time"
    assert attributes["proctor.code"].string_value == "grant_malformed"
    assert "not.a.grant" not in str(request)


def test_nothing_is_traced_or_configured_without_otel_variables(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER",
                 "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.configure()
    assert not telemetry.is_enabled()
    with telemetry.span("x") as current:
        assert current is None
    assert telemetry.current_carrier() == {}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.configure()
