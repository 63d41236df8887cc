"""OpenTelemetry for proctor: spans and metrics, off — and nearly free — unless configured.

Configured by OpenTelemetry's own variables and nothing else: telemetry is on when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` other than ``none``, is set, the
``otel`` extra is installed and ``OTEL_SDK_DISABLED`` is not ``true``; the exporters read
the rest (headers, protocol, timeouts, ``OTEL_SERVICE_NAME``, resource attributes).
Off, every instrumented place costs one boolean test: no span, no context, no
attribute is made.

Spans (names and attributes after OpenTelemetry's GenAI and MCP semantic conventions
where they exist):

- ``tools/call <tool>`` (SERVER): a gateway call as the agent made it — parent: the
  ``traceparent`` in the request's ``_meta`` (or HTTP header); ``mcp.method.name``,
  ``gen_ai.operation.name`` ``execute_tool``, ``gen_ai.tool.name``, ``mcp.session.id``;
- ``proctor.decision <tool>`` (INTERNAL): one decision — ``proctor.decision``,
  ``proctor.code``, ``proctor.policy_ids``, ``proctor.policy_revision``, ``proctor.agent``,
  ``proctor.task``;
- ``proctor.approval.wait`` (INTERNAL): the wait for a human — ``proctor.approval.id``;
- ``tools/call <tool>`` (CLIENT): the upstream call — its ``_meta`` carries this span's
  ``traceparent``.

Never an argument, a token, a proof or a secret: attributes are names, codes and ids.

Metrics: ``proctor.decisions`` (counter by ``proctor.decision`` and ``proctor.code``),
``proctor.decision.duration`` (histogram, seconds), ``proctor.approvals.pending``
(up-down counter), ``proctor.revocations`` (counter), ``proctor.gateway.sessions``
(up-down counter).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["SpanKind", "add_approvals_pending", "add_gateway_sessions", "configure",
           "count_revocations", "current_carrier", "flush", "is_enabled", "record_decision",
           "reset", "set_attributes", "span", "trace_context"]

log = logging.getLogger(__name__)

SpanKind = Literal["internal", "server", "client"]


@dataclass
class _Instruments:
    providers: tuple[Any, Any]
    tracer: Any
    decisions: Any
    duration: Any
    pending: Any
    revocations: Any
    sessions: Any


_on: _Instruments | None = None


def is_enabled() -> bool:
    return _on is not None


def _wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return True
    return any(env.get(name, "none").lower() != "none"
               for name in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"))


def configure(env: Mapping[str, str] | None = None, *, tracer_provider: Any = None,
              meter_provider: Any = None) -> bool:
    """Turn telemetry on from the ``OTEL_*`` variables (or with the providers given, for
    tests and embedding); False, and everything stays off, when it is not wanted."""
    global _on
    if tracer_provider is None or meter_provider is None:
        if not _wanted(os.environ if env is None else env):
            return False
        try:
            tracer_provider, meter_provider = _providers_from_env(
                os.environ if env is None else env)
        except ImportError:
            log.warning("OTEL_* is set but the `otel` extra is not installed: no telemetry")
            return False
    version = importlib.metadata.version("proctor")
    tracer = tracer_provider.get_tracer("proctor", version)
    meter = meter_provider.get_meter("proctor", version)
    _on = _Instruments(
        providers=(tracer_provider, meter_provider),
        tracer=tracer,
        decisions=meter.create_counter("proctor.decisions", unit="{decision}",
                                       description="tool-call decisions by outcome and code"),
        duration=meter.create_histogram("proctor.decision.duration", unit="s",
                                        description="one decision, audit included"),
        pending=meter.create_up_down_counter("proctor.approvals.pending", unit="{approval}",
                                             description="calls waiting for a human"),
        revocations=meter.create_counter("proctor.revocations", unit="{node}",
                                         description="lease nodes revoked"),
        sessions=meter.create_up_down_counter("proctor.gateway.sessions", unit="{session}",
                                              description="open gateway sessions"))
    return True


def _providers_from_env(env: Mapping[str, str]) -> tuple[Any, Any]:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "proctor")})
    tracer_provider = TracerProvider(resource=resource)
    if env.get("OTEL_TRACES_EXPORTER", "otlp").lower() != "none":
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    readers = []
    if env.get("OTEL_METRICS_EXPORTER", "otlp").lower() != "none":
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    return tracer_provider, MeterProvider(resource=resource, metric_readers=readers)


def reset() -> None:
    """Everything off again (tests)."""
    global _on
    _on = None


def flush(timeout_millis: int = 10_000) -> None:
    """Export what is buffered now (at exit the SDK does it by itself)."""
    if _on is not None:
        for provider in _on.providers:
            if hasattr(provider, "force_flush"):
                provider.force_flush(timeout_millis)


@contextmanager
def span(name: str, *, kind: SpanKind = "internal",
         attributes: Mapping[str, Any] | None = None,
         carrier: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span around the block (``None`` when off); ``carrier`` a ``traceparent`` to join."""
    on = _on
    if on is None:
        yield None
        return
    from opentelemetry import propagate, trace

    context = None
    if carrier:
        joined = trace_context(carrier)
        if joined:
            context = propagate.extract(joined)
    with on.tracer.start_as_current_span(
            name, context=context, kind=getattr(trace.SpanKind, kind.upper()),
            attributes={k: v for k, v in (attributes or {}).items() if v is not None}
    ) as current:
        yield current


_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}"
                          r"-[0-9a-f]{2}")
_TRACESTATE_KEY = (r"(?:[a-z][_0-9a-z*/-]{0,255}"  # a key, or a multi-tenant one: tenant@system
                   r"|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})")
_TRACESTATE_MEMBER = re.compile(
    rf"({_TRACESTATE_KEY})=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{{0,255}}[\x21-\x2b\x2d-\x3c\x3e-\x7e])")
MAX_TRACEPARENT_CHARS = 512
MAX_TRACESTATE_CHARS = 512
MAX_TRACESTATE_MEMBERS = 32


def trace_context(carrier: Mapping[str, Any]) -> dict[str, str]:
    """The W3C Trace Context in ``carrier`` (HTTP headers or a request's ``_meta``) that
    a span may join: its ``traceparent`` if well-formed, with its ``tracestate`` if that
    is well-formed too; {} otherwise. What an agent sends is checked here, before
    OpenTelemetry reads it (whose warnings would write the agent's bytes into proctor's
    log) and before it could travel on in the upstream call's ``tracestate``.

    ``traceparent``: version (not ``ff``), trace id, parent id (neither all zeros) and
    flags in lower-case hex; version ``00`` has nothing after, a later version may have
    ``-…`` after (ignored, as the specification asks). ``tracestate``: at most
    :data:`MAX_TRACESTATE_CHARS` characters and :data:`MAX_TRACESTATE_MEMBERS` members,
    each ``key=value`` of the specification's characters, no key twice; an invalid
    ``tracestate`` is dropped and the ``traceparent`` kept.

    >>> trace_context({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    ...                "tracestate": "vendor=x,Bad Key=1"})
    {'traceparent': '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01'}
    """
    parent = carrier.get("traceparent")
    if not isinstance(parent, str) or len(parent) > MAX_TRACEPARENT_CHARS \
            or _TRACEPARENT.match(parent) is None \
            or (len(parent) != 55 and (parent.startswith("00") or parent[55:56] != "-")):
        if parent is not None:
            log.debug("an invalid traceparent was dropped")
        return {}
    found = {"traceparent": parent[:55]}
    state = carrier.get("tracestate")
    if state is None:
        return found
    if isinstance(state, str) and _is_tracestate(state):
        found["tracestate"] = state
    else:
        log.debug("an invalid tracestate was dropped")
    return found


def _is_tracestate(state: str) -> bool:
    if len(state) > MAX_TRACESTATE_CHARS:
        return False
    keys: set[str] = set()
    for member in state.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        matched = _TRACESTATE_MEMBER.fullmatch(member)
        if matched is None or matched[1] in keys:
            return False
        keys.add(matched[1])
    return len(keys) <= MAX_TRACESTATE_MEMBERS


def set_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def current_carrier() -> dict[str, str]:
    """The current span's ``traceparent`` (and ``tracestate``), to send on; {} when off."""
    if _on is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def record_decision(outcome: str, code: str, seconds: float) -> None:
    on = _on
    if on is not None:
        labels = {"proctor.decision": outcome, "proctor.code": code}
        on.decisions.add(1, labels)
        on.duration.record(seconds, labels)


def add_approvals_pending(delta: int) -> None:
    if _on is not None:
        _on.pending.add(delta)


def count_revocations(nodes: int) -> None:
    if _on is not None and nodes:
        _on.revocations.add(nodes)


def add_gateway_sessions(delta: int) -> None:
    if _on is not None:
        _on.sessions.add(delta)
