"""What OpenTelemetry adds to a decision, off and on (for bench/decision.py).

``instrumented(decide)`` wraps a decision exactly as ``Enforcer.decide_call`` does:
one boolean test when telemetry is off; a span with proctor's attributes and the
decision metrics when it is on. ``switched_on`` runs the same wrapper with telemetry on
(an SDK tracer and meter that export nothing, so only proctor's and the SDK's own work
is measured), switching it off again after each call so that the other variants, timed
in the same rounds, run with it off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from proctor import telemetry
from proctor.policy import Decision, DecisionRequest

Decide = Callable[[DecisionRequest], Decision]


def instrumented(decide: Decide) -> Decide:
    def run(request: DecisionRequest) -> Decision:
        if not telemetry.is_enabled():
            return decide(request)
        started = time.monotonic()
        with telemetry.span(f"proctor.decision {request.action}", attributes={
                "gen_ai.tool.name": str(request.action), "mcp.method.name": "tools/call"}
                            ) as current:
            decision = decide(request)
            telemetry.set_attributes(current, {
                "proctor.decision": decision.outcome.value, "proctor.code": decision.code.value,
                "proctor.policy_ids": list(decision.policy_ids)})
        telemetry.record_decision(decision.outcome.value, decision.code.value,
                                  time.monotonic() - started)
        return decision

    return run


def switched_on(decide: Decide) -> Decide | None:
    """``instrumented(decide)`` with telemetry on; None without the ``otel`` extra."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    telemetry.configure(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    on: Any = telemetry._on
    telemetry.reset()
    wrapped = instrumented(decide)

    def run(request: DecisionRequest) -> Decision:
        telemetry._on = on
        try:
            return wrapped(request)
        finally:
            telemetry._on = None

    return run
