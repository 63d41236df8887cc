"""``proctor gateway``'s direct path: a plain ``tools/call`` POST decided and answered
without the MCP SDK's session manager, dispatcher and SSE response.

A POST takes it only when every check the SDK's path makes would pass, and the answer
is what that path answers (:class:`GrantGate` in :mod:`proctor.gateway.http` has
already checked the bearer grant, the body's size and depth, and that the MCP session
belongs to the grant):

- the body is one plain call: ``jsonrpc`` 2.0, an id (a string or an integer),
  ``method`` ``tools/call``, ``params`` holding a string ``name`` and an object (or
  null) ``arguments`` and nothing else (no ``_meta``: no progress token, no trace
  context, no 2026-07-28 envelope), readable as UTF-8 text without a lone surrogate;
- ``Mcp-Session-Id`` names a session of this endpoint's session manager that is not
  terminated nor ending idle, whose ``initialize`` (a 2025 protocol version) this
  gateway saw answered, and ``MCP-Protocol-Version`` is that negotiated version;
- ``Content-Type`` is ``application/json``, ``Accept`` names both
  ``application/json`` and ``text/event-stream`` (as the SDK requires), and
  ``Host`` and ``Origin`` pass the SDK's DNS-rebinding check.

Anything else (``initialize``, notifications, batches, GET and DELETE, a call with
``_meta``, an unknown session, a header the SDK would refuse) goes through the SDK
unchanged. The call itself runs as the SDK's handler runs it: the grant's gateway
session held, :meth:`Gateway.call_tool_answer` under :func:`internal_errors`, the result
shaped for the negotiated version by the SDK's own sieve (an upstream's direct answer
stays a dict throughout, :mod:`proctor.gateway.shaped`). It counts as a request in
flight for the SDK session's idle timer, as the SDK's own requests do.

It reads internals of the pinned MCP SDK (mcp 2.3.0): the session manager's
transports and owners by session id, the transport's requests in flight and idle
timer. :func:`sdk_shape_missing` checks them once, when the app is built; if any is
missing (another SDK), an error is logged and every request takes the SDK's path.

The answer is one ``application/json`` body (the streamable HTTP transport lets a
server answer a request with one JSON object; the SDK's client reads it whole, so its
connection goes back to the pool). If the upstream logs or asks the agent something
(sampling, elicitation) during the call, the answer becomes an SSE stream at that
moment, as the SDK's would have been: the log or the request (under an id
``proctor-N``) goes out as an event, the agent's answer to it comes back in a POST of
its own on the same session (taken here, answered ``202``), and the result ends the
stream. A ``notifications/cancelled`` for a call in flight cancels it, and the call is
answered ``-32800`` as the SDK answers a cancelled request on the 2025 wire.

A call still unanswered after :data:`KEEPALIVE_SECONDS` (a call held for a human's
approval waits up to two minutes) becomes an SSE stream too, and a comment line
(``: ping``) goes out every :data:`KEEPALIVE_SECONDS` until the result: as the SDK's
SSE answer pings, so that a proxy between the agent and the gateway does not take the
silent connection for a dead one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import anyio
import mcp_types as types
from mcp.server.session import ServerSession
from mcp.server.streamable_http import (
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import INTERNAL_ERROR, ErrorData
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message, Scope, Send

from proctor import telemetry
from proctor.documents import check_json_text
from proctor.errors import DocumentError
from proctor.gateway.core import Gateway
from proctor.gateway.relay import Relay
from proctor.gateway.rpc import internal_errors
from proctor.gateway.shaped import shaped_result
from proctor.gateway.views import View
from proctor.grants import GrantClaims

__all__ = ["DirectCall", "HttpDirect", "read_message", "sdk_shape_missing"]

log = logging.getLogger(__name__)

Hold = Callable[[GrantClaims], Any]  # an async context: (session, credentials)

_CALL_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_CALL_PARAMS = frozenset({"name", "arguments"})
_OWN_ID = "proctor-"
_CANCELLED = {"code": -32800, "message": "Request cancelled"}  # the SDK's, on the 2025 wire
_UNWRITABLE = {"code": INTERNAL_ERROR, "message": "the answer could not be written as JSON"}
_SSE_HEADERS = [(b"cache-control", b"no-cache, no-transform"), (b"connection", b"keep-alive"),
                (b"content-type", b"text/event-stream")]
_CAPTURE_BYTES = 65536  # how much of an initialize's answer is read for its version
_PING = b": ping\r\n\r\n"  # an SSE comment: read by nobody, it keeps the connection busy

KEEPALIVE_SECONDS = 15.0
"""How long a call's answer stays silent before a ping (sse_starlette's, for the SDK)."""


def read_message(body: bytes) -> Any:
    """The JSON document of ``body``, or None where the SDK's parser must answer (not
    UTF-8, a lone surrogate, a byte-order mark: Python's json reads what that parser
    refuses)."""
    try:
        text = body.decode("utf-8")
        check_json_text(text, what="the message")
        return json.loads(text)
    except (ValueError, RecursionError, DocumentError):  # UnicodeDecodeError is a ValueError
        return None


def _is_id(value: object) -> TypeGuard[types.RequestId]:
    return isinstance(value, int | str) and not isinstance(value, bool)


def plain_call(document: Any) -> tuple[types.RequestId, str, dict[str, Any]] | None:
    """The id, tool name and arguments of a plain ``tools/call`` (see the module's
    docstring), or None."""
    if not isinstance(document, dict) or document.keys() - _CALL_KEYS:
        return None
    request_id, params = document.get("id"), document.get("params")
    if (document.get("jsonrpc") != "2.0" or document.get("method") != "tools/call"
            or not _is_id(request_id) or not isinstance(params, dict)
            or params.keys() - _CALL_PARAMS or not isinstance(params.get("name"), str)):
        return None
    arguments = params.get("arguments")
    if arguments is None:
        arguments = {}
    elif not isinstance(arguments, dict):
        return None
    return request_id, params["name"], arguments


class DirectCall:
    """A plain call that passed every check of the direct path, ready to serve."""

    __slots__ = ("arguments", "name", "request_id", "session_id", "transport", "version")

    def __init__(self, session_id: str, transport: Any, version: str,
                 request_id: types.RequestId, name: str, arguments: dict[str, Any]) -> None:
        self.session_id = session_id
        self.transport = transport
        self.version = version
        self.request_id = request_id
        self.name = name
        self.arguments = arguments


class HttpDirect:
    """The direct path of one gateway app: the negotiated version of each MCP session
    whose ``initialize`` it saw answered, the direct calls in flight and the requests
    they sent the agent."""

    def __init__(self, gateway: Gateway, managers: Mapping[str, StreamableHTTPSessionManager],
                 views: Mapping[str, View], security: TransportSecuritySettings) -> None:
        self._gateway = gateway
        self._managers = managers
        self._views = views
        self._security = TransportSecurityMiddleware(security)
        self.versions: dict[str, str] = {}  # MCP session id -> negotiated 2025 version
        self._calls: dict[tuple[str, types.RequestId], anyio.CancelScope] = {}
        self._asked: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {}
        self._ask_ids = itertools.count(1)
        missing = sorted({name for m in managers.values() for name in sdk_shape_missing(m)})
        self.enabled = not missing  # else the SDK's path serves every request
        if missing:
            log.error("the MCP SDK does not have what the HTTP direct path reads (%s): "
                      "every request takes the SDK's path", ", ".join(missing))

    def forget(self, session_id: str) -> None:
        self.versions.pop(session_id, None)

    # what takes the direct path

    async def take(self, scope: Scope, headers: Headers, path: str, document: Any
                   ) -> DirectCall | None:
        """The call in ``document`` if it takes the direct path (see the module's
        docstring), else None: the SDK answers it."""
        call = plain_call(document) if self.enabled else None
        if call is None:
            return None
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        version = self.versions.get(session_id) if session_id is not None else None
        if session_id is None or version is None or (session_id, call[0]) in self._calls:
            return None  # an id already in flight here: the SDK answers it, as before
        if headers.getlist(MCP_PROTOCOL_VERSION_HEADER) != [version]:
            return None
        transport = await self._admits(scope, headers, path, session_id)
        if transport is None:
            return None
        return DirectCall(session_id, transport, version, *call)

    async def settle(self, scope: Scope, headers: Headers, path: str, document: Any) -> bool:
        """Whether ``document`` is for a direct call in flight on the request's session
        (and is now taken): the agent's answer to a request of a call, or its
        cancellation of a call. Anything else is the SDK's."""
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        if (session_id is None or not isinstance(document, dict)
                or document.get("jsonrpc") != "2.0"):
            return False
        taken: Callable[[], None] | None = None
        if document.get("method") == "notifications/cancelled":
            params = document.get("params")
            cancelled = params.get("requestId") if isinstance(params, dict) else None
            running = self._calls.get((session_id, cancelled)) if _is_id(cancelled) else None
            if running is not None and not document.keys() - {"jsonrpc", "method", "params"}:
                taken = running.cancel
        else:
            asked = document.get("id")
            key = (session_id, asked if isinstance(asked, str) else "")
            settle = self._asked.get(key) if "method" not in document else None
            if settle is not None:
                def answered() -> None:
                    if self._asked.pop(key, None) is not None:
                        settle(document)
                taken = answered
        if taken is None or await self._admits(scope, headers, path, session_id) is None:
            return False
        taken()
        return True

    async def _admits(self, scope: Scope, headers: Headers, path: str, session_id: str
                      ) -> Any:
        """The SDK transport of ``session_id`` on ``path`` if a POST with these headers
        would reach its session (the SDK's checks of the session and the headers), else
        None."""
        manager = self._managers[path]
        transport = manager._server_instances.get(session_id)
        if transport is None:
            self.versions.pop(session_id, None)  # ended: forget it
            return None
        if transport.is_terminated or manager._session_owners.get(session_id) is not None:
            return None
        idle = transport.idle_scope
        if idle is not None and idle.cancel_called:
            return None  # ending idle: the SDK answers it as it ends
        content_type = headers.get("content-type", "")
        if "application/json" not in (p.strip() for p in content_type.split(";")[0].split(",")):
            return None
        request = Request(scope)
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse):
            return None
        if await self._security.validate_request(request, is_post=True) is not None:
            return None
        return transport

    # the initialize handshake, watched on the SDK's path

    def watch_initialize(self, document: Any, session_id: str | None, send: Send) -> Send:
        """``send``, watching the answer to ``document`` if it is an ``initialize``: once
        it is answered with a 2025 version, calls on its session may take the direct
        path. An ``initialize`` on an existing session closes the direct path there
        until it is answered (it may negotiate another version)."""
        if not isinstance(document, dict) or document.get("method") != "initialize":
            return send
        if session_id is not None:
            self.versions.pop(session_id, None)
        request_id = document.get("id")
        if not _is_id(request_id):
            return send
        state: dict[str, Any] = {"session": session_id, "body": bytearray(), "done": False}

        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered = dict(message.get("headers", []))
                sid = answered.get(MCP_SESSION_ID_HEADER.encode())
                if sid is not None and message.get("status", 500) < 400:
                    state["session"] = sid.decode("latin-1")
                else:
                    state["done"] = True
            elif message["type"] == "http.response.body" and not state["done"]:
                body: bytearray = state["body"]
                body += message.get("body", b"")
                version = _answered_version(bytes(body), request_id)
                if version is not None or len(body) > _CAPTURE_BYTES:
                    state["done"] = True
                    if (version in HANDSHAKE_PROTOCOL_VERSIONS
                            and isinstance(state["session"], str)):
                        self.versions[state["session"]] = version
            await send(message)

        return watching

    # serving a call

    async def serve(self, call: DirectCall, scope: Scope, send: Send, *, path: str,
                    bind: Any) -> None:
        """Decide and answer ``call``; ``bind`` holds the grant's gateway session for the
        call, yielding it and the call's credentials (as the SDK's handler's binder)."""
        answer = _Answer(send, call)
        answer.keep_alive()
        key = (call.session_id, call.request_id)
        cancel = self._calls[key] = anyio.CancelScope()
        transport = call.transport
        idle = transport.idle_scope
        timeout = transport._idle_timeout
        if idle is None or timeout is None:
            idle = timeout = None
        else:  # a request in flight holds the session, as the SDK counts its own
            transport._requests_in_flight += 1
            idle.deadline = math.inf
        try:
            message: dict[str, Any] | None = None
            with cancel:
                message = await self._answer(call, scope, path, bind, answer)
            if message is None:
                message = {"jsonrpc": "2.0", "id": call.request_id, "error": _CANCELLED}
            with anyio.CancelScope(shield=True):
                await answer.finish(message)
        finally:
            answer.stop_pinging()
            self._calls.pop(key, None)
            if idle is not None and timeout is not None:
                transport._requests_in_flight -= 1
                if not transport._requests_in_flight:
                    idle.deadline = anyio.current_time() + timeout

    async def _answer(self, call: DirectCall, scope: Scope, path: str, bind: Any,
                      answer: _Answer) -> dict[str, Any]:
        view = self._views[path]
        relay = _HttpRelay(self, call, answer)
        try:
            with internal_errors("tools/call"):  # around the binding too, as the SDK's handler
                async with bind() as (session, creds):
                    result = await self._gateway.call_tool_answer(
                        session, creds, view, call.name, call.arguments, relay,
                        meta=_trace_carrier(scope))
            return {"jsonrpc": "2.0", "id": call.request_id,
                    "result": shaped_result(result, call.version)}
        except Exception as exc:
            error = handler_exception_to_error_data(exc)
            if error is None:  # nothing else escapes internal_errors; fail closed anyway
                log.error("a call failed: %s", type(exc).__name__)
                error = ErrorData(code=INTERNAL_ERROR, message="the call failed inside proctor")
            return {"jsonrpc": "2.0", "id": call.request_id,
                    "error": error.model_dump(by_alias=True, mode="json", exclude_unset=True)}

    async def ask(self, call: DirectCall, answer: _Answer, method: str,
                  params: dict[str, Any]) -> dict[str, Any]:
        """Send the agent a request on the call's stream and wait for its answer (the
        JSON-RPC response, as a dict), which comes in a POST of its own."""
        request_id = f"{_OWN_ID}{next(self._ask_ids)}"
        answered = anyio.Event()
        found: dict[str, Any] = {}

        def settle(document: dict[str, Any]) -> None:
            found.update(document)
            answered.set()

        key = (call.session_id, request_id)
        self._asked[key] = settle
        try:
            await answer.event({"jsonrpc": "2.0", "id": request_id, "method": method,
                                "params": params})
            await answered.wait()
        finally:
            if self._asked.pop(key, None) is not None:  # abandoned: tell the agent, as the SDK
                with anyio.CancelScope(shield=True):
                    await answer.cancelled(request_id)
        return found


_MANAGER_FIELDS = ("_server_instances", "_session_owners")  # dicts by MCP session id
_TRANSPORT_FIELDS = ("_requests_in_flight", "_idle_timeout", "idle_scope", "is_terminated")


def sdk_shape_missing(manager: StreamableHTTPSessionManager) -> list[str]:
    """What the direct path reads of the MCP SDK's internals (pinned: mcp 2.3.0) that
    ``manager`` and the SDK's server transport lack: empty on the pinned SDK. The
    direct path finds a session's transport in the manager, as the manager does, and
    counts its calls in the transport's idle timer, as the transport does."""
    missing = [f"StreamableHTTPSessionManager.{name}" for name in _MANAGER_FIELDS
               if not isinstance(getattr(manager, name, None), dict)]
    transport = StreamableHTTPServerTransport(mcp_session_id=None, idle_timeout=1.0)
    missing += [f"StreamableHTTPServerTransport.{name}" for name in _TRANSPORT_FIELDS
                if not hasattr(transport, name)]
    return missing


def _answered_version(body: bytes, request_id: types.RequestId) -> str | None:
    """The protocol version an ``initialize`` answer (JSON, or an SSE event) agreed on,
    once its answer to ``request_id`` is in ``body``."""
    texts = [body]
    if not body.lstrip().startswith(b"{"):
        texts = [line[5:] for line in body.splitlines() if line.startswith(b"data:")]
    for text in texts:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(message, dict) and message.get("id") == request_id:
            result = message.get("result")
            version = result.get("protocolVersion") if isinstance(result, dict) else None
            return version if isinstance(version, str) else ""
    return None


def _trace_carrier(scope: Scope) -> Mapping[str, Any] | None:
    """The request's trace context headers, as the SDK's path takes them for a call
    without ``_meta`` (looked at only when telemetry is on)."""
    if not telemetry.is_enabled():
        return None
    headers = Headers(scope=scope)
    if "traceparent" not in headers:
        return None
    return {name: headers[name] for name in ("traceparent", "tracestate") if name in headers}


def _encode(message: dict[str, Any]) -> bytes | None:
    """``message`` as JSON, or None if JSON cannot hold it."""
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        log.error("an outgoing message could not be written as JSON")
        return None


def _written(message: dict[str, Any]) -> bytes:
    """``message`` as JSON; one that cannot be written goes out as an error for its
    request, and an error whose id cannot be written goes out without it."""
    return (_encode(message)
            or _encode({"jsonrpc": "2.0", "id": message.get("id"), "error": _UNWRITABLE})
            or _encode({"jsonrpc": "2.0", "id": None, "error": _UNWRITABLE}) or b"")


class _Answer:
    """One call's HTTP answer: a JSON body, unless something went out before the result
    (then an SSE stream, as the SDK's)."""

    def __init__(self, send: Send, call: DirectCall) -> None:
        self._send = send
        self._session = call.session_id.encode("latin-1")
        self._streaming = False
        self._finished = False
        self._writing = anyio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._pinging: asyncio.Task[None] | None = None  # held: the loop keeps a weak one

    def keep_alive(self) -> None:
        """Ping every :data:`KEEPALIVE_SECONDS` until :meth:`stop_pinging` (one loop timer;
        a task only when it fires)."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._pinging = loop.create_task(self._ping())
            self._timer = loop.call_later(KEEPALIVE_SECONDS, fire)

        self._timer = loop.call_later(KEEPALIVE_SECONDS, fire)

    def stop_pinging(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _ping(self) -> None:
        try:
            async with self._writing:
                if self._finished:
                    return
                await self._start_stream()
                await self._send({"type": "http.response.body", "more_body": True,
                                  "body": _PING})
        except Exception as exc:  # the agent went away: the call's own answer will say so
            log.debug("a keep-alive ping was not sent: %s", type(exc).__name__)

    async def _start_stream(self) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send({"type": "http.response.start", "status": 200, "headers": [
                *_SSE_HEADERS, (MCP_SESSION_ID_HEADER.encode(), self._session)]})

    async def event(self, message: dict[str, Any]) -> None:
        """``message`` on the call's stream, before its result."""
        text = _encode(message)
        if text is None:
            raise MCPError(code=INTERNAL_ERROR, message="the message cannot be written")
        async with self._writing:
            await self._start_stream()
            await self._send({"type": "http.response.body", "more_body": True,
                              "body": b"event: message\r\ndata: " + text + b"\r\n\r\n"})

    async def cancelled(self, request_id: str) -> None:
        """A ``notifications/cancelled`` for the request ``request_id`` the call sent the
        agent, if its stream is still open (best effort: the agent may be gone)."""
        if not self._streaming or self._finished:
            return
        try:
            await self.event({"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": request_id,
                                         "reason": "no answer in time"}})
        except Exception as exc:  # the agent went away: nothing more to tell it
            log.debug("a cancellation was not sent: %s", type(exc).__name__)

    async def finish(self, message: dict[str, Any]) -> None:
        text = _written(message)
        self.stop_pinging()
        async with self._writing:
            self._finished = True
            if self._streaming:
                await self._send({"type": "http.response.body", "more_body": False,
                                  "body": b"event: message\r\ndata: " + text + b"\r\n\r\n"})
                return
            await self._send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(text)).encode()),
                (MCP_SESSION_ID_HEADER.encode(), self._session)]})
            await self._send({"type": "http.response.body", "body": text, "more_body": False})


class _HttpRelay(Relay):
    """The agent's side of a direct call: the upstream's requests and logs go on the
    call's answer, which becomes an SSE stream for them."""

    def __init__(self, direct: HttpDirect, call: DirectCall, answer: _Answer) -> None:
        self._direct = direct
        self._call = call
        self._answer = answer
        self.progress_token = None  # a call with a progress token takes the SDK's path

    async def request(self, request: Any, result_type: type[Any]) -> Any:
        sent = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        answer = await self._direct.ask(self._call, self._answer, sent["method"],
                                        sent.get("params") or {})
        error = answer.get("error")
        if isinstance(error, dict):
            raise MCPError.from_error_data(ErrorData.model_validate(error))
        return result_type.model_validate(answer.get("result"), by_name=False)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        await self._answer.event({"jsonrpc": "2.0", "method": "notifications/message",
                                  "params": params.model_dump(by_alias=True, mode="json",
                                                              exclude_none=True)})

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return  # no progress token: nothing is relayed

    @property
    def session(self) -> ServerSession:
        raise MCPError(code=INTERNAL_ERROR, message="a direct call has no SDK session")
