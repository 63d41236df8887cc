"""Request size, depth and rate limits.

:class:`BodyLimit` refuses a body over the limit with 413 before the
application reads it: at once when ``Content-Length`` says so, otherwise as
soon as the streamed body passes the limit. A JSON body nested deeper than
:data:`proctor.documents.MAX_DEPTH` is refused 422 ``document_too_deep`` before
FastAPI parses it (its parser would recurse once per level, and what it let
through would reach the decision path). A query string that gives a parameter twice
is refused 422 ``request_invalid`` (no route of the API takes a list in its query).

:class:`RateLimiter` is a token bucket per principal (a human, an agent, or
a client address that failed to authenticate), **per process**: with N
processes a principal gets up to N times the rate. It bounds what one caller
can cost one process; it is not a quota.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor.clock import Clock
from proctor.documents import check_json_nesting, check_json_text, repeated_key
from proctor.errors import DocumentError
from proctor.server.problems import problem_response

__all__ = ["BodyLimit", "RateLimiter"]

_MAX_BUCKETS = 100_000


class BodyLimit:
    """ASGI middleware: 413 ``request_too_large`` for bodies over ``max_bytes``, 422
    ``document_too_deep`` for JSON nested too deep, 422 ``document_malformed`` for JSON
    that escapes a lone surrogate (no Unicode text: nothing downstream could store,
    audit or answer it), 422 ``request_invalid`` for JSON that gives a key twice in one
    object (FastAPI and pydantic keep the last; another reader, such as the upstream a
    decided call's arguments go to, may keep the first).

    The body is read here, up to the limit, before the application sees it: no
    route ever holds a partial body, and none runs for an oversized one.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string")
        if query:
            name = _repeated_parameter(query)
            if name is not None:
                await problem_response(
                    422, "request_invalid", f"the query string gives the parameter "
                    f"`{name[:80]}` twice; parameters must be unique",
                    instance=scope.get("path", ""))(scope, receive, send)
                return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _is_json(scope):
            try:
                check_json_nesting(body, what="the request body")
                check_json_text(body, what="the request body")
            except DocumentError as exc:
                await problem_response(422, exc.code, exc.message,
                                       instance=scope.get("path", ""))(scope, receive, send)
                return
            # one more parse of the body: ~4 us for a decision's 2 KB (docs/benchmarks.md,
            # "A JSON key given twice")
            key = repeated_key(body) if body else None
            if key is not None:
                await problem_response(
                    422, "request_invalid", f"the request body gives the key `{key}` twice "
                    "in one object; keys must be unique",
                    instance=scope.get("path", ""))(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, "request_too_large",
                                    f"the request body is over {self.max_bytes} bytes",
                                    instance=scope.get("path", ""),
                                    headers={"Connection": "close"})
        await response(scope, receive, send)


def _repeated_parameter(query: bytes) -> str | None:
    """The first parameter ``query`` gives twice, if any: FastAPI and Starlette read
    the last of them (a scalar parameter), a proxy or a log in front may read the first,
    so an audit search or a decision's listing would not be what the request shows."""
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return name
        seen.add(name)
    return None


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would read the body as JSON: a JSON media type, or none."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """Token buckets: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, clock: Clock, *, rate: float, burst: int) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token from ``key``'s bucket; 0 if granted, else the seconds to wait."""
        now = self._clock.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(self.burst), now]
                if len(self._buckets) > _MAX_BUCKETS:
                    self._buckets.popitem(last=False)  # the least recently seen
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] >= 1.0:
                bucket[0] -= 1.0
                return 0.0
            return (1.0 - bucket[0]) / self.rate

    @staticmethod
    def retry_after(wait: float) -> dict[str, Any]:
        """The ``Retry-After`` header for a wait (whole seconds, at least 1)."""
        return {"Retry-After": str(max(1, math.ceil(wait)))}
