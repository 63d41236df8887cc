"""Prometheus metrics: decisions by outcome, latencies, refusals, rate limiting.

With several worker processes (``proctor serve --workers N``) the serve
command sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; each
process then writes its samples there and ``/metrics`` adds up every
process's. Otherwise each app keeps its own registry.

Only counts and timings are exported: no agent ids, no arguments, no tokens.
Label values come from closed sets (outcomes, reason codes, route templates).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor.clock import Clock

__all__ = ["Metrics", "MetricsMiddleware"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The API's metrics, in a registry of their own (or the multiprocess directory)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.decisions = Counter(
            "proctor_decisions", "Tool-call decisions made through POST /v1/decide",
            ["outcome", "code"], registry=registry)
        self.decision_seconds = Histogram(
            "proctor_decision_seconds", "Time to decide one tool call, audit included",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.requests = Counter(
            "proctor_http_requests", "HTTP requests by route and status",
            ["method", "route", "status"], registry=registry)
        self.request_seconds = Histogram(
            "proctor_http_request_seconds", "HTTP request latency by route",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.refusals = Counter(
            "proctor_control_plane_refusals", "403 answers of the control plane, by action",
            ["action"], registry=registry)
        self.rate_limited = Counter(
            "proctor_rate_limited", "Requests answered 429", registry=registry)
        self.swept = Counter(
            "proctor_swept", "Tasks ended, expired leases revoked and proof nonces forgotten "
            "by the sweep",
            ["kind"], registry=registry)
        self.revocations_heard = Counter(
            "proctor_revocations_heard",
            "Lease nodes revoked by any node, as heard on the revocation channel",
            registry=registry)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, clock: Clock) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        counted = False

        def labels() -> tuple[str, str]:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            return (method if method in _METHODS else "OTHER"), path  # clients pick the method

        async def observe(message: Message) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                # counted before the answer goes out: a client that has its answer (and asks
                # /metrics next, on any worker) finds it counted
                counted = True
                self.metrics.requests.labels(*labels(), str(int(message["status"]))).inc()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            method, path = labels()
            if not counted:  # failed before answering: the server's 500
                self.metrics.requests.labels(method, path, "500").inc()
            self.metrics.request_seconds.labels(method, path).observe(
                self.clock.monotonic() - started)
