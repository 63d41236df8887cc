"""A streamable HTTP upstream's plain calls, posted by the gateway itself.

The MCP SDK's streamable HTTP client sends a request through a memory stream to
its writer task, which posts a model's dump, parses the answer (JSON or an SSE
stream) into models and hands it through another stream to the ``ClientSession``'s
dispatcher and on to the waiting task. :class:`UpstreamPosts` posts a plain
request on the same pooled HTTP client, with the headers the SDK's transport
would send (the session id the upstream gave at ``initialize``, the negotiated
protocol version, the configured headers), and reads its answer as a dict:

- ``application/json``: the body is the response;
- ``text/event-stream``: events are read until the response; a log message on that
  stream is relayed (``on_log``, by :func:`~proctor.gateway.pipes.relay_log`, as the
  pipes relay a stdio server's) before the next event is read, so it reaches the
  agent before the answer, as the SDK's session's answer comes after its messages;
  so is the call's progress, if it asked for it (the token is the request's id; one
  under that token on a call that did not ask is dropped, as the SDK's dispatcher
  drops it); any other message (progress under another token, a sampling or
  elicitation request) is handed to the SDK's session as its transport would hand
  it, so it is relayed and answered as before (the progress of a call that asked for
  it, sent on the upstream's GET stream instead, is relayed as it comes:
  :meth:`UpstreamPosts.relayed_progress`);
- an HTTP error with a JSON-RPC error in its body is that error; any other error
  status, as the SDK's transport words it (``Session terminated`` for a 404 on a
  session); a redirect off the upstream's origin, ``202``, another content type, a
  stream that ends (or breaks) without the response, or a response that is not
  JSON-RPC: ``upstream_invalid_result``. A stream that ends without the response
  is not resumed from its last event id as the SDK's transport would resume it.

A JSON body longer than ``max_answer_bytes`` (counted by the client's transport,
:class:`~proctor.gateway.keepalive.KeepAliveTransport`, which caps the SDK's reads
too), or an event longer (its lines, field names included), is
``upstream_result_too_large``: counted while it is read, never held whole, and the
response is closed unread (its connection is not reused).

An answered event stream is closed in a task of the connection's (``later``), as the
SDK's transport closes it after handing the answer on: what is left of it (the
chunked body's end, as a rule, still on its way when the answer is read) is read
then, bounded, so that its connection goes back to the pool without the call
waiting for it; its reader (httpx2's event source over the response's text and
bytes, three async generators) is read to its end there too, rather than left
suspended for the garbage collector, whose asyncio hook would close each in a task
of its own, woken through the loop's self-pipe (three tasks and wake-ups a call);
and the next posted request waits for that before it is sent, so
that it reuses the connection.

A request abandoned (its timeout, or its caller cancelled) is cancelled at the
upstream with ``notifications/cancelled``, posted as the SDK's dispatcher does.

A posted request is the one ``client.build_request`` would build (the client's headers,
then those above; the client's cookies and timeout) and is sent as the SDK's
``stream_within_origin`` sends it (a redirect followed only within the upstream's
origin, at most ``max_redirects`` times, through ``client.send``: its hooks and cookie
jar), without parsing the upstream's URL and merging the headers again for every
request: they are merged once per session id and protocol version.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, suppress
from typing import Any

import anyio
import httpx2
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream
from httpx2 import EventSource, ServerSentEvent
from mcp.client.streamable_http import MCP_SESSION_ID
from mcp.shared._httpx_utils import next_request_within_origin
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND

from proctor.documents import check_json_text
from proctor.errors import DocumentError, GatewayError
from proctor.gateway import keepalive
from proctor.gateway.keepalive import AnswerRefused, EventsRefused
from proctor.gateway.pipes import (
    DEFAULT_MAX_ANSWER_BYTES,
    OnLog,
    OnProgress,
    asking,
    invalid_answer,
    outcome,
    progress_of,
    relay_log,
    relay_progress,
    too_large,
)

__all__ = ["UpstreamPosts"]

log = logging.getLogger(__name__)

_OWN_ID = "proctor-"
_CANCEL_POST_SECONDS = 1.0
ToSession = MemoryObjectSendStream[SessionMessage | Exception]


class UpstreamPosts:
    """Plain requests to one streamable HTTP upstream, beside the SDK's session."""

    def __init__(self, client: httpx2.AsyncClient, url: str, to_session: ToSession, *,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
                 on_log: OnLog | None = None) -> None:
        self._client = client
        self._on_log = on_log
        self.later: Callable[..., Any] | None = None  # the connection's tasks' start_soon
        self._draining = 0  # answered streams still being read to their end
        self._drained = anyio.Event()
        self._max_answer = max_answer_bytes
        self._url = httpx2.URL(url)  # parsed once
        self._merged: tuple[tuple[str | None, str | None], httpx2.Headers] | None = None
        self._to_session = to_session
        self._ids = itertools.count(1)
        self.session_id: str | None = None
        self.version: str | None = None
        self._asking: dict[str, OnProgress] = {}  # the calls in flight that asked for progress

    async def note_response(self, response: httpx2.Response) -> None:
        """An httpx response hook: the session id the upstream gives (at ``initialize``)."""
        if self.session_id is None:
            given = response.headers.get(MCP_SESSION_ID)
            if given:
                self.session_id = given

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json, text/event-stream",
                   "content-type": "application/json"}
        if self.session_id:
            headers[MCP_SESSION_ID] = self.session_id
        if self.version:
            headers[MCP_PROTOCOL_VERSION_HEADER] = self.version
        return headers

    def _request(self, body: bytes) -> httpx2.Request:
        """The POST of ``body`` as ``client.build_request`` builds it (the gateway's
        client has no base URL nor query parameters of its own), its headers merged once
        for the session id and version they carry."""
        client = self._client
        key = (self.session_id, self.version)
        merged = self._merged
        if merged is None or merged[0] != key:
            headers = httpx2.Headers(client.headers)
            headers.update(self._headers())
            merged = self._merged = (key, headers)
        return httpx2.Request("POST", self._url, content=body, headers=merged[1],
                              cookies=client.cookies,
                              extensions={"timeout": client.timeout.as_dict()})

    async def _sent(self, request: httpx2.Request) -> httpx2.Response:
        """``request`` sent as the SDK's ``stream_within_origin`` sends it: a redirect
        followed only while it stays within the upstream's origin (each redirect's body
        read and closed), at most ``max_redirects`` times; else the last response."""
        client = self._client
        followed = 0
        while True:
            response = await client.send(request, stream=True, follow_redirects=False)
            next_request = next_request_within_origin(response)
            if next_request is None or followed == client.max_redirects:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
            request = next_request
            followed += 1

    async def request(self, method: str, params: dict[str, Any], *,
                      on_progress: OnProgress | None = None) -> dict[str, Any]:
        """Post one request and return its result as the upstream wrote it (a dict);
        raises as :func:`proctor.gateway.pipes.outcome` does. ``on_progress``: asks
        for progress, each notification of it on the request's stream relayed there
        in order, before the answer."""
        request_id = f"{_OWN_ID}{next(self._ids)}"
        if on_progress is not None:
            params = asking(params, request_id)
            self._asking[request_id] = on_progress
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                           "params": params}, ensure_ascii=False, separators=(",", ":"))
        answered = False
        try:
            answer = await self._post(request_id, body.encode(), on_progress)
            answered = True
        except (httpx2.HTTPError, OSError):
            answered = True  # nothing to cancel on a connection that failed
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed") from None
        finally:
            self._asking.pop(request_id, None)
            if not answered:
                await self._cancel(request_id)
        return outcome(answer)

    async def relayed_progress(self, message: SessionMessage | Exception) -> bool:
        """Relay ``message`` if it is the progress of a posted call in flight that asked
        for it, sent on the upstream's GET stream rather than the call's own (so in no
        order against the call's answer); True once relayed, False for anything else,
        which the SDK's session sees."""
        report = progress_of(message) if self._asking else None
        on_progress = (self._asking.get(report[0]) if report and isinstance(report[0], str)
                       else None)
        if report is None or on_progress is None:
            return False
        await relay_progress(on_progress, report)
        return True

    async def _post(self, request_id: str, body: bytes, on_progress: OnProgress | None
                    ) -> Any:
        if self._draining:  # an answered stream's end is still on its way: its connection
            await self._drained.wait()  # is the one to reuse
        async with AsyncExitStack() as stack:
            response = await self._sent(self._request(body))
            stack.push_async_callback(response.aclose)
            status = response.status_code
            if status >= 400:
                return await self._refused(response)
            if status != 200:  # 202 for a request, or a redirect off the origin
                return invalid_answer(f"HTTP status {status} to a request")
            kind = response.headers.get("content-type", "").lower()
            if kind.startswith("application/json"):
                data = await _body(response)
                if isinstance(data, GatewayError):
                    return data
                document = _document(data)
                if isinstance(document, dict) and document.get("id") != request_id:
                    return invalid_answer("a response to another request")
                return document
            if kind.startswith("text/event-stream"):
                events = EventSource(response, max_event_size=self._max_answer).__aiter__()
                answer = await self._events(events, request_id, on_progress)
                if isinstance(answer, dict) and self.later is not None:
                    later = stack.pop_all()
                    later.push_async_callback(_run_out, events, response)  # runs first
                    try:
                        self._close_later(self.later, later)
                    except RuntimeError:  # the connection's tasks have ended: closed here
                        await later.aclose()
                return answer
            return invalid_answer("a content type that is neither JSON nor an event stream")

    def _close_later(self, later: Callable[..., Any], stack: AsyncExitStack) -> None:
        """Close an answered event stream in a task of the connection's, after the answer
        went back (reading what is left of it, bounded, so that its connection is
        reused): the stream's end is not waited for on the call's way."""
        later(self._closed, stack)  # the task runs after this returns
        if not self._draining:
            self._drained = anyio.Event()
        self._draining += 1

    async def _closed(self, stack: AsyncExitStack) -> None:
        try:
            await stack.aclose()
        except Exception as exc:  # the connection is dropped: nothing else to do
            log.debug("an answered stream did not close cleanly: %s", type(exc).__name__)
        finally:
            self._draining -= 1
            if not self._draining:
                self._drained.set()

    async def _refused(self, response: httpx2.Response) -> Any:
        """An HTTP error status, as the SDK's transport answers it."""
        if response.headers.get("content-type", "").lower().startswith("application/json"):
            with suppress(httpx2.StreamError):
                data = await _body(response)
                if isinstance(data, GatewayError):
                    return data
                document = _document(data)
                if isinstance(document, dict) and "error" in document and "result" not in document:
                    return document
        if response.status_code == 404:
            if self.session_id is None:
                raise MCPError(code=METHOD_NOT_FOUND, message="Not Found")
            raise MCPError(code=INVALID_REQUEST, message="Session terminated")
        raise MCPError(code=INTERNAL_ERROR, message="Server returned an error response")

    async def _events(self, events: AsyncIterator[ServerSentEvent], request_id: str,
                      on_progress: OnProgress | None) -> Any:
        try:
            async for event in events:
                if event.event != "message" or not event.data:
                    continue  # a priming event, or one MCP does not define
                document = _document(event.data)
                if (isinstance(document, dict) and "method" not in document
                        and document.get("id") == request_id):
                    return document
                if isinstance(document, Exception):
                    return document  # the stream of this request: its answer is lost
                await self._hand_on(event.data, request_id, on_progress)
        except httpx2.SSEError as exc:
            if isinstance(exc, EventsRefused):  # the client's transport stopped it
                return exc.error
            if str(exc).startswith("Server-sent event exceeded"):  # httpx2's size check
                return too_large(self._max_answer)
            return invalid_answer("an event stream that cannot be read")
        except AnswerRefused as exc:  # encoded when asked for as it is
            return exc.error
        except (httpx2.HTTPError, OSError):
            pass
        return invalid_answer("an event stream that ended without the response")

    async def _hand_on(self, data: str, request_id: str, on_progress: OnProgress | None
                       ) -> None:
        """A message on a call's stream that is not its answer: a log message relayed
        here, and the call's progress (its id is the token) if it asked for it (else
        dropped, as the SDK's dispatcher drops it); anything else to the SDK's session."""
        try:
            message: SessionMessage | Exception = SessionMessage(
                types.jsonrpc_message_adapter.validate_json(data, by_name=False))
        except ValueError as exc:
            message = exc
        if await relay_log(message, self.version, self._on_log):
            return
        report = progress_of(message)
        if report is not None and report[0] == request_id:
            if on_progress is not None:
                await relay_progress(on_progress, report)
            return
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._to_session.send(message)

    async def _cancel(self, request_id: str) -> None:
        body = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": request_id, "reason": "caller cancelled"}})
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_POST_SECONDS), \
                suppress(httpx2.HTTPError, OSError):
            response = await self._client.post(self._url, content=body.encode(),
                                               headers=self._headers())
            await response.aclose()


async def _run_out(events: AsyncIterator[ServerSentEvent], response: httpx2.Response) -> None:
    """Read what is left of an answered event stream through its reader, to the end,
    as :class:`~proctor.gateway.keepalive.KeepAliveTransport` drains a closed body
    (at most ``DRAIN_BYTES`` more, within ``DRAIN_SECONDS``): its generators end
    here, each closing the one it reads, the response's stream last. Past the bound
    they are left to the collector and the response closes as before; a stream that
    breaks now breaks after its answer, which stands (never raises)."""
    most = response.num_bytes_downloaded + keepalive.DRAIN_BYTES
    with anyio.move_on_after(keepalive.DRAIN_SECONDS):
        try:
            async for _ in events:  # events after the answer: not this call's
                if response.num_bytes_downloaded > most:
                    return
        except Exception as exc:  # the connection is not reused: nothing else to do
            log.debug("an answered stream broke after its answer: %s", type(exc).__name__)


async def _body(response: httpx2.Response) -> bytes | GatewayError:
    """The response's body, or why it was not read whole (the client's transport caps
    it: :class:`~proctor.gateway.keepalive.KeepAliveTransport`)."""
    try:
        return await response.aread()
    except AnswerRefused as exc:
        return exc.error


def _document(data: bytes | str) -> Any:
    """The JSON of an answer, or the ``upstream_invalid_result`` error it is: read as
    the SDK's parser reads it (UTF-8 without a byte-order mark, no lone surrogate)."""
    try:
        text = data if isinstance(data, str) else data.decode("utf-8")
        check_json_text(text, what="the answer")
        return json.loads(text)
    except (ValueError, RecursionError, DocumentError):  # UnicodeDecodeError is one
        return invalid_answer("an answer that is not JSON the gateway can read")
