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
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx2

__all__ = ["KeepAliveTransport", "keepalive_client"]

DRAIN_BYTES = 65_536  # what a closed answer may still have to read, at most
DRAIN_SECONDS = 0.5


class _DrainedOnClose(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner
        self._parts: AsyncIterator[bytes] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._parts = self._inner.__aiter__()
        async for part in self._parts:
            yield part

    async def aclose(self) -> None:
        try:
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
    closed early: the connection is reused."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        if not isinstance(stream, httpx2.AsyncByteStream):
            return response
        return httpx2.Response(response.status_code, headers=response.headers,
                               stream=_DrainedOnClose(stream), extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def keepalive_client(headers: dict[str, str], timeout: httpx2.Timeout) -> httpx2.AsyncClient:
    """An HTTP client for one upstream connection: its connections pooled and kept."""
    return httpx2.AsyncClient(headers=headers, timeout=timeout,
                              transport=KeepAliveTransport(httpx2.AsyncHTTPTransport()))
