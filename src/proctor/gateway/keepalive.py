"""The upstream's HTTP client keeps its connections for the next request.

The MCP SDK's streamable HTTP client closes a call's SSE answer as soon as the
answer's event is in, before the server has ended the stream (the chunked body's
last few bytes are still on their way). A response closed before its end cannot
leave its connection to the pool, so every call through the HTTP gateway opened a
new TCP connection to its upstream (and the upstream accepted one).

:class:`KeepAliveTransport` reads what is left of a body when it is closed early,
bounded in bytes and time, so that the connection goes back to the pool and the
next request reuses it. A body that is longer, or slower, than the bounds is closed
as before: the connection is dropped, nothing waits on an upstream that keeps its
stream open. The answer has been relayed before this runs (the SDK closes the
response after handing the message on), so the call does not wait for it.

The same transport bounds what any request on the client reads (the gateway's posted
calls and everything the SDK's transport sends: calls with progress, resources,
prompts, listings): a body that is not an event stream (a JSON answer, which the
SDK's transport reads whole) stops at ``max_answer_bytes``, counted as it is read,
with :class:`AnswerRefused` (``upstream_result_too_large``); an event stream is
bounded per event by its reader. The client asks for bodies as they are
(``Accept-Encoding: identity``), so that what is counted is what is parsed; a body
(an event stream too) that comes encoded all the same is refused at its first read
(``upstream_invalid_result``), before a small compressed body, or one chunk of it,
could grow in memory past the cap. A refused body is closed unread: its connection
is dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx2

from proctor.errors import GatewayError
from proctor.gateway.http11 import Http11Transport
from proctor.gateway.pipes import DEFAULT_MAX_ANSWER_BYTES, invalid_answer, too_large

__all__ = ["ENCODED", "AnswerRefused", "EventsRefused", "KeepAliveTransport",
           "keepalive_client"]

DRAIN_BYTES = 65_536  # what a closed answer may still have to read, at most
DRAIN_SECONDS = 0.5
ENCODED = invalid_answer("a body encoded when it was asked for as it is")


class AnswerRefused(httpx2.StreamError):
    """A body the gateway stopped reading; ``error`` says why. A ``StreamError``: the
    SDK's transport answers its request with a parse error carrying this text."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class EventsRefused(httpx2.SSEError):
    """An event stream the gateway stopped reading; ``error`` says why. An ``SSEError``,
    as the reader's own size check raises: the SDK's transport answers that request
    alone with it (``SSE stream failed: ...``), and its connection serves on."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class _DrainedOnClose(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int | None,
                 refused: GatewayError | None = None) -> None:
        self._inner = inner
        self._limit = limit  # None: an event stream, bounded per event by its reader
        self._refused = refused
        self._parts: AsyncIterator[bytes] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._refused is not None:
            raise AnswerRefused(self._refused) if self._limit is not None \
                else EventsRefused(self._refused)
        self._parts = self._inner.__aiter__()
        limit = self._limit
        if limit is None:
            async for part in self._parts:
                yield part
            return
        left = limit
        async for part in self._parts:
            left -= len(part)
            if left < 0:
                self._refused = too_large(limit)
                raise AnswerRefused(self._refused)
            yield part

    async def aclose(self) -> None:
        try:
            if self._refused is None:
                await self._drain()
        finally:
            await self._inner.aclose()

    async def _drain(self) -> None:
        parts = self._parts if self._parts is not None else self._inner.__aiter__()
        self._parts = parts
        left = DRAIN_BYTES
        with anyio.move_on_after(DRAIN_SECONDS):
            try:
                async for part in parts:
                    left -= len(part)
                    if left < 0:
                        return
            except (httpx2.HTTPError, RuntimeError, OSError):
                # read already, or the connection broke: closed below either way
                return


class KeepAliveTransport(httpx2.AsyncBaseTransport):
    """``inner`` with every response's body read to its end (bounded) when it is
    closed early: the connection is reused; and a body that is not an event stream
    capped at ``max_answer_bytes``."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, *,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> None:
        self._inner = inner
        self._max_answer = max_answer_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        if not isinstance(stream, httpx2.AsyncByteStream):
            return response
        headers = response.headers
        limit: int | None = None
        refused: GatewayError | None = None
        if not headers.get("content-type", "").lower().startswith("text/event-stream"):
            limit = self._max_answer
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            refused = ENCODED  # an event's cap counts decoded lines, after a whole chunk
        return httpx2.Response(response.status_code, headers=headers,
                               stream=_DrainedOnClose(stream, limit, refused),
                               extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def keepalive_client(headers: dict[str, str], timeout: httpx2.Timeout, *,
                     max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES) -> httpx2.AsyncClient:
    """An HTTP client for one upstream connection: its connections pooled and kept, its
    bodies asked for unencoded and capped (see :class:`KeepAliveTransport`)."""
    client = httpx2.AsyncClient(headers=headers, timeout=timeout, transport=KeepAliveTransport(
        Http11Transport(httpx2.AsyncHTTPTransport()), max_answer_bytes=max_answer_bytes))
    client.headers["accept-encoding"] = "identity"
    return client
