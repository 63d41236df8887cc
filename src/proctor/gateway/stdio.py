"""The agent-facing stdio transport: newline-delimited JSON-RPC with a size cap.

The SDK's ``stdio_server`` reads whole lines of any length and drops lines it
cannot parse without an answer. This transport answers instead:

- a line over the cap is discarded as it streams in (it is never held whole) and
  answered ``-32600 message_too_large``, with the request's id when it can be read
  from the start of the line (JSON-RPC clients put ``id`` before ``params``);
- a line nested deeper than :data:`proctor.documents.MAX_DEPTH` is answered
  ``-32600 message_too_deep`` (with its id as above) before anything parses it;
- a line that is not JSON is answered ``-32700 parse_error``; JSON that is not a
  JSON-RPC message, ``-32600 invalid_request`` (with its id if it has one), a request
  whose id is not a string or an integer among them (the SDK read it as a notification);
- an answer that cannot be written as JSON (an id or a value JSON cannot hold)
  goes out as an error without that id, or as ``-32603`` for its request: what
  goes out never ends the session either.

It also knows which requests are still unanswered, so that a closing session can
let its last error responses reach the agent before the pipe closes
(:meth:`StdioTransport.serve` with ``stop``).

``tools/call`` takes a direct path when the transport is given ``calls`` (the
wrapper's :class:`DirectCalls`): once the agent's ``initialize`` (2025 protocol
versions) has been answered, a plain call (``name`` and ``arguments``, no
``_meta``, no other params, an id not in use) is read from its dict and handed to
``calls`` in a task of its own, and its answer is written as one line: no SDK
models, dispatcher or memory streams between the pipe and the decision. Anything
else (the 2026-07-28 envelope, progress tokens, tasks, every other method, a call
before ``initialize``) goes through the SDK's server as before. An upstream's
sampling or elicitation request during a direct call is sent to the agent on this
pipe under an id of the form ``proctor-N``, and the agent's answer to it is taken
off the pipe here; ``notifications/cancelled`` for a direct call cancels it, and
it is not answered. On the agent's pipe (:class:`PipeReader`) such lines are taken in
the pipe's read callback when the reading task holds nothing before them (no part of
a line, no line not yet delivered): the call's task starts from there, and the
reading task is not woken for it (one turn of the loop less per call); the first
other line of a chunk, and all after it, are the reading task's, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
import mcp_types as types
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.lowlevel.server import Server
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import SessionMessage
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError
from pydantic import BaseModel

from proctor.codes import Code, rpc_code
from proctor.documents import MAX_DEPTH, check_json_nesting, check_json_text, parse_json
from proctor.errors import DocumentError
from proctor.gateway.relay import Relay
from proctor.gateway.rpc import (
    PREFIX_BYTES,
    is_unanswered,
    names_an_id,
    repeated_key_refusal,
    request_id_in_prefix,
)
from proctor.gateway.shaped import ShapedAnswer, shaped_result

__all__ = ["DirectCalls", "PipeReader", "PipeWriter", "StdioTransport", "claim_stdio"]

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 5.0

ToServer = MemoryObjectSendStream[SessionMessage | Exception]
FromServer = MemoryObjectSendStream[SessionMessage]
_CALL_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_CALL_PARAMS = frozenset({"name", "arguments"})
_UNWRITABLE = {"code": INTERNAL_ERROR, "message": "the answer could not be written as JSON"}
_OWN_ID = "proctor-"  # the ids of the requests this transport sends the agent itself


class DirectCalls(Protocol):
    """Answers a plain ``tools/call`` (see the module's docstring); raises
    :class:`MCPError` for a JSON-RPC error, as an SDK handler would."""

    def __call__(self, name: str, arguments: dict[str, Any], relay: Relay
                 ) -> Awaitable[BaseModel | ShapedAnswer]: ...


class StdioTransport:
    """Serves one MCP ``Server`` over a byte stream pair."""

    def __init__(self, reader: ByteReceiveStream, writer: ByteSendStream, *,
                 max_message_bytes: int, calls: DirectCalls | None = None) -> None:
        self._reader = reader
        self._writer = writer
        self._max = max_message_bytes
        self._outstanding: set[types.RequestId] = set()
        self._answered = anyio.Event()
        self._calls = calls
        self._writing = anyio.Lock(fast_acquire=True)  # no turn of the loop when free
        self._initialize_id: types.RequestId | None = None
        self._version: str | None = None  # negotiated by ``initialize``: direct calls on
        self._direct: dict[types.RequestId, anyio.CancelScope] = {}
        self._asked: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._ask_ids = itertools.count(1)
        self._tasks: Any = None
        # the reading task holds no part of a line and no line not yet delivered: a
        # line the pipe's callback reads may go to the direct path at once (_quick)
        self._is_between_lines = True

    async def serve(self, server: Server[Any], *, stop: anyio.Event | None = None) -> None:
        """Serve until the agent closes its end, or ``stop`` is set (then pending
        requests are answered first, for up to five seconds)."""
        to_server, server_in = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        server_out, from_server = anyio.create_memory_object_stream[SessionMessage](0)
        reading, stopping = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            if isinstance(self._reader, PipeReader):
                self._reader.quick = self._quick
            tasks.start_soon(self._read, to_server, server_out.clone(), reading)
            # The writer ends by itself once every sender is closed: the last answers
            # are written, not cut off.
            tasks.start_soon(self._write, from_server)
            if stop is not None:
                tasks.start_soon(self._stop_when, stop, reading, stopping)
            await server.run(server_in, server_out, server.create_initialization_options())
            for scope in self._direct.values():  # the agent is gone, as the SDK's are
                scope.cancel()
            reading.cancel()
            stopping.cancel()
        # The agent sees the end of the stream: the session is over.
        for stream in (self._writer, self._reader):
            with contextlib.suppress(OSError, anyio.ClosedResourceError):
                await stream.aclose()

    async def _stop_when(self, stop: anyio.Event, reading: anyio.CancelScope,
                         stopping: anyio.CancelScope) -> None:
        with stopping:
            await stop.wait()
            with anyio.move_on_after(_DRAIN_SECONDS):
                while True:
                    self._answered = anyio.Event()
                    if not self._outstanding:
                        break
                    await self._answered.wait()
            reading.cancel()

    async def _read(self, to_server: ToServer, errors: FromServer,
                    reading: anyio.CancelScope) -> None:
        try:
            await self._read_lines(to_server, errors, reading)
        finally:
            # read no more: the pipe's callback would go on starting calls from the
            # agent's lines (quick) in a transport that is ending (a revocation's stop)
            if isinstance(self._reader, PipeReader):
                self._reader.stop_reading()

    async def _read_lines(self, to_server: ToServer, errors: FromServer,
                          reading: anyio.CancelScope) -> None:
        async with to_server, errors:
            with reading:
                buffer = bytearray()
                oversized = False
                while True:
                    try:
                        chunk = await self._reader.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError,
                            anyio.BrokenResourceError):
                        return
                    self._is_between_lines = False
                    lines = chunk.split(b"\n")
                    for index, piece in enumerate(lines):
                        ends_line = index < len(lines) - 1
                        if not oversized:
                            buffer += piece
                            if len(buffer) > self._max:
                                oversized = True
                                await self._too_large(bytes(buffer[:PREFIX_BYTES]), errors)
                                buffer.clear()
                        if ends_line:
                            if not oversized and buffer.strip():
                                await self._deliver(bytes(buffer), to_server, errors)
                            buffer.clear()
                            oversized = False
                    self._is_between_lines = not buffer and not oversized

    def _quick(self, chunk: bytes) -> int:
        """How many bytes from the start of ``chunk`` (read by the pipe's callback) went
        to the direct path there and then: whole lines, each a plain ``tools/call`` (or
        a cancellation of one, or an answer to a request of ours) that passes the
        checks :meth:`_deliver` makes first, while the reading task holds nothing before
        them. The first other line, and all after it, are the task's, in order (one turn
        of the loop less per call: the task is not woken for a call's line). Never
        raises: a line it cannot judge is the task's."""
        if not self._is_between_lines or self._version is None:
            return 0
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0 or end - start > self._max:
                return start
            line = chunk[start:end]
            try:
                if not (b'"tools/call"' in line or b'"notifications/cancelled"' in line
                        or _OWN_ID.encode() in line):
                    return start
                check_json_nesting(line, what="the message")
                if repeated_key_refusal(line) is not None or not self._taken(line):
                    return start
            except Exception:  # the task checks it again and answers what it finds
                return start
            start = end + 1

    async def _deliver(self, line: bytes, to_server: ToServer, errors: FromServer) -> None:
        try:
            check_json_nesting(line, what="the message")
            refusal = repeated_key_refusal(line)
            if refusal is not None:  # decided on one value, forwarded with the other
                if is_unanswered(line):  # a notification or a response: dropped
                    log.warning("dropped a notification or response: %r",
                                refusal[2])  # the agent's key: escaped
                else:
                    await _answer(errors, *refusal, data={})
                return
            if self._version is not None and self._taken(line):
                return
            message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except DocumentError as exc:
            await self._unreadable(line, exc, errors)
            return
        except ValueError:
            await self._reject(line, errors)
            return
        if isinstance(message, types.JSONRPCNotification) and names_an_id(line):
            await self._reject(line, errors)  # a request with an id of no valid type
            return
        if isinstance(message, types.JSONRPCRequest):
            self._outstanding.add(message.id)
            if message.method == "initialize" and self._calls is not None:
                self._initialize_id = message.id
        await to_server.send(SessionMessage(message))

    # the direct path

    def _taken(self, line: bytes) -> bool:
        """Whether ``line`` is for the direct path (and is now under way there): a plain
        ``tools/call``, a cancellation of one, or the agent's answer to a request of
        this transport. Anything else is left to the SDK's server."""
        # a cheap look first; the line's document then says which it is (an answer to a
        # request of ours may hold the text "tools/call", a cancellation its own reason)
        if not (b'"tools/call"' in line or (self._direct and b'"notifications/cancelled"' in line)
                or (self._asked and _OWN_ID.encode() in line)):
            return False
        document = _read(line)
        if not isinstance(document, dict):
            return False
        method = document.get("method")
        if method == "tools/call":
            request_id = _plain_call_id(document)
            if request_id is None or request_id in self._outstanding:
                return False
            params = document["params"]
            arguments = params.get("arguments")
            self._outstanding.add(request_id)
            scope = self._direct[request_id] = anyio.CancelScope()
            self._tasks.start_soon(self._call, request_id, params["name"],
                                   arguments if arguments is not None else {}, scope)
            return True
        if method == "notifications/cancelled":
            params = document.get("params")
            cancelled = params.get("requestId") if isinstance(params, dict) else None
            if not isinstance(cancelled, int | str) or isinstance(cancelled, bool):
                return False
            cancelling = self._direct.pop(cancelled, None)
            if cancelling is None:
                return False
            cancelling.cancel()  # the agent gave up on it: it is not answered (MCP)
            self._settle(cancelled)
            return True
        asked = document.get("id")
        settle = (self._asked.pop(asked, None)
                  if isinstance(asked, str) and "method" not in document else None)
        if settle is None:
            return False
        settle(document)
        return True

    async def _call(self, request_id: types.RequestId, name: str, arguments: dict[str, Any],
                    scope: anyio.CancelScope) -> None:
        calls = self._calls
        assert calls is not None
        with scope:
            try:
                result = await calls(name, arguments, _PipeRelay(self))
                answer = {"jsonrpc": "2.0", "id": request_id,
                          "result": self._shaped(result)}
            except Exception as exc:
                error = handler_exception_to_error_data(exc)
                if error is None:  # as the SDK's dispatcher answers it
                    log.error("a call failed: %s", type(exc).__name__)
                    error = ErrorData(code=0, message=str(exc))
                answer = {"jsonrpc": "2.0", "id": request_id,
                          "error": error.model_dump(by_alias=True, mode="json",
                                                    exclude_unset=True)}
            if self._direct.pop(request_id, None) is None:
                return  # cancelled by the agent meanwhile
            # as _dump: the answer that cannot be written goes out as an error, and an
            # error whose id cannot be written goes out without it
            text = _encode(answer) or _encode(
                {"jsonrpc": "2.0", "id": request_id, "error": _UNWRITABLE}) or _encode(
                {"jsonrpc": "2.0", "id": None, "error": _UNWRITABLE})
            with anyio.CancelScope(shield=True):
                await self.send_line(text or b"")
            self._settle(request_id)

    def _shaped(self, result: BaseModel | ShapedAnswer) -> dict[str, Any]:
        """The result as the SDK's server sends it at the negotiated version."""
        return shaped_result(result, self._version or "")

    def _settle(self, request_id: types.RequestId) -> None:
        self._outstanding.discard(request_id)
        self._answered.set()

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send the agent a request of this transport's own and wait for its answer (the
        JSON-RPC response, as a dict)."""
        request_id = f"{_OWN_ID}{next(self._ask_ids)}"
        answered = anyio.Event()
        answer: dict[str, Any] = {}

        def settle(document: dict[str, Any]) -> None:
            answer.update(document)
            answered.set()

        self._asked[request_id] = settle
        try:
            text = _encode({"jsonrpc": "2.0", "id": request_id, "method": method,
                            "params": params})
            if text is None:
                raise MCPError(code=INTERNAL_ERROR, message="the request cannot be written")
            await self.send_line(text)
            await answered.wait()
        finally:
            self._asked.pop(request_id, None)
        return answer

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        text = _encode({"jsonrpc": "2.0", "method": method, "params": params})
        if text is not None:
            await self.send_line(text)

    async def send_line(self, text: bytes) -> None:
        """One line to the agent; lines of concurrent writers are never interleaved."""
        async with self._writing:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await self._writer.send(text)

    async def _reject(self, line: bytes, errors: FromServer) -> None:
        try:
            document = parse_json(line, what="the message", max_bytes=self._max)
        except DocumentError:
            await _answer(errors, None, "parse_error", "the message is not JSON")
            return
        request_id = document.get("id") if isinstance(document, dict) else None
        if not isinstance(request_id, int | str) or isinstance(request_id, bool):
            request_id = None
        await _answer(errors, request_id, "message_invalid",
                      "the message is not a valid JSON-RPC request")

    async def _unreadable(self, line: bytes, exc: DocumentError, errors: FromServer) -> None:
        if exc.code != "document_too_deep":
            await _answer(errors, None, "parse_error", "the message is not JSON")
            return
        log.warning("refused a message nested deeper than %d levels", MAX_DEPTH)
        await _answer(errors, request_id_in_prefix(line[:PREFIX_BYTES]), "message_too_deep",
                      f"a message may nest at most {MAX_DEPTH} levels",
                      data={"max_depth": MAX_DEPTH})

    async def _too_large(self, prefix: bytes, errors: FromServer) -> None:
        log.warning("refused a message over %d bytes", self._max)
        await _answer(errors, request_id_in_prefix(prefix), "message_too_large",
                      f"a message may be at most {self._max} bytes",
                      data={"max_bytes": self._max})

    async def _write(self, from_server: Any) -> None:
        async with from_server:
            async for session_message in from_server:
                message = session_message.message
                text = _dump(message)
                if text is None:
                    continue
                try:
                    async with self._writing:
                        await self._writer.send((text + "\n").encode("utf-8"))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    return
                if isinstance(message, types.JSONRPCResponse | JSONRPCError):
                    if (message.id == self._initialize_id
                            and isinstance(message, types.JSONRPCResponse)):
                        version = message.result.get("protocolVersion")
                        # the 2025 handshake: the direct path is open from here
                        self._version = version if isinstance(version, str) else None
                    self._outstanding.discard(message.id)
                    self._answered.set()


def _read(line: bytes) -> Any:
    """The JSON document of ``line``, or None where the SDK's parser must answer: Python's
    json module reads from bytes what that parser refuses (it decodes them with
    surrogatepass, past a byte-order mark), a surrogate encoded as UTF-8, a byte-order
    mark, and a lone surrogate escaped (a pair, an emoji, is read)."""
    try:
        text = line.decode("utf-8")
        check_json_text(text, what="the message")
        return json.loads(text)
    except (ValueError, DocumentError):  # UnicodeDecodeError and JSONDecodeError are
        return None


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _plain_call_id(document: Any) -> types.RequestId | None:
    """The id of a plain ``tools/call`` (see the module's docstring), or None."""
    if not isinstance(document, dict) or document.keys() - _CALL_KEYS:
        return None
    request_id, params = document.get("id"), document.get("params")
    if (document.get("jsonrpc") != "2.0" or document.get("method") != "tools/call"
            or not _is_id(request_id) or not isinstance(params, dict)
            or params.keys() - _CALL_PARAMS or not isinstance(params.get("name"), str)
            or not isinstance(params.get("arguments", {}), dict | None)):
        return None
    return request_id


def _encode(message: dict[str, Any]) -> bytes | None:
    """``message`` as one line of JSON, or None if JSON cannot hold it."""
    try:
        return (json.dumps(message, ensure_ascii=False, separators=(",", ":"),
                           allow_nan=False) + "\n").encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        log.error("an outgoing message could not be written as JSON")
        return None


class _PipeRelay(Relay):
    """The agent's side of a direct call: requests and logs go on the pipe."""

    def __init__(self, transport: StdioTransport) -> None:
        self._transport = transport
        self.progress_token = None  # a call with a progress token takes the SDK's path

    async def request(self, request: Any, result_type: type[Any]) -> Any:
        sent = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        answer = await self._transport.ask(sent["method"], sent.get("params") or {})
        error = answer.get("error")
        if isinstance(error, dict):
            raise MCPError.from_error_data(ErrorData.model_validate(error))
        return result_type.model_validate(answer.get("result"), by_name=False)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        await self._transport.notify("notifications/message", params.model_dump(
            by_alias=True, mode="json", exclude_none=True))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        return  # no progress token: nothing is relayed

    @property
    def session(self) -> ServerSession:
        raise MCPError(code=INTERNAL_ERROR, message="a direct call has no SDK session")


def _dump(message: types.JSONRPCMessage) -> str | None:
    """``message`` as one line of JSON. One that cannot be written (an id or a value
    JSON cannot hold, like a lone surrogate) must not end the session: an error goes
    out without its id, a result as an error for its request, anything else not."""
    try:
        return message.model_dump_json(by_alias=True, exclude_unset=True)
    except (ValueError, RecursionError) as exc:  # PydanticSerializationError is a ValueError
        log.error("an outgoing message could not be written as JSON: %s", type(exc).__name__)
    if isinstance(message, JSONRPCError):
        fallback = message.model_copy(update={"id": None})
    elif isinstance(message, types.JSONRPCResponse):
        fallback = JSONRPCError(jsonrpc="2.0", id=message.id, error=ErrorData(
            code=INTERNAL_ERROR, message="the answer could not be written as JSON"))
    else:
        return None
    try:
        return fallback.model_dump_json(by_alias=True, exclude_unset=True)
    except (ValueError, RecursionError):
        return None


async def _answer(errors: FromServer, request_id: types.RequestId | None, reason: Code,
                  message: str, *, data: Mapping[str, Any] | None = None) -> None:
    """A JSON-RPC error with ``reason``'s code (:mod:`proctor.codes`); a message too large
    or too deep also names its reason in ``data``, as the gateway's refusals do."""
    code = rpc_code(reason)
    text = f"{reason}: {message}"
    error = (ErrorData(code=code, message=text) if data is None
             else ErrorData(code=code, message=text, data={"reason": reason, **data}))
    await errors.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error)))


class PipeReader(ByteReceiveStream):
    """Bytes from a pipe's file descriptor, read without blocking the event loop (and
    so cancellable, unlike a read in a worker thread).

    The pipe stays registered with the loop between reads (as asyncio's own pipe
    transports keep theirs): its callback reads a chunk and hands it to the waiting
    :meth:`receive`; a chunk nobody waits for is kept, and the pipe is not watched
    until it is taken (nor after its end). A chunk read while :meth:`receive` waits
    costs no registration of the pipe (two ``epoll_ctl`` calls each time before)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_watching = False
        self._waiter: asyncio.Future[None] | None = None
        self._chunk: bytes | None = None  # read by the callback, not yet taken
        self._failed: Exception | None = None
        self._max = 65536
        # takes whole lines from the start of a chunk in the callback (StdioTransport's
        # _quick), returning how many bytes it took; the rest is receive()'s
        self.quick: Callable[[bytes], int] | None = None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        self._max = max_bytes
        while self._chunk is None and self._failed is None:
            loop = self._loop = self._loop or asyncio.get_running_loop()
            self._watch()
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self._failed is not None:
            raise self._failed
        chunk, self._chunk = self._chunk, None
        if not chunk:  # the end: kept for every later call
            self._chunk = chunk
            raise anyio.EndOfStream
        self._watch()  # the pipe is watched again once the chunk is taken
        return chunk

    def _readable(self) -> None:
        if self._chunk is not None:  # more comes before the last chunk is taken
            self._unwatch()
            return
        try:
            chunk = os.read(self._fd, self._max)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed = exc
            chunk = b""
        quick = self.quick
        if chunk and quick is not None:
            taken = quick(chunk)
            if taken >= len(chunk):  # all of it went on: nothing for receive()
                return
            if taken:
                chunk = chunk[taken:]
        self._chunk = chunk
        waiter = self._waiter
        if waiter is not None and not waiter.done() and chunk:
            waiter.set_result(None)  # taken in the next turn: the pipe stays watched
            return
        self._unwatch()  # nobody waits, or the end (which stays readable): held
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop_reading(self) -> None:
        """Take nothing more from the pipe until the next :meth:`receive`: ``quick``
        unset and the pipe no longer watched (a chunk already read stays held)."""
        self.quick = None
        self._unwatch()

    def _watch(self) -> None:
        if not self._is_watching and self._chunk is None and self._loop is not None:
            self._loop.add_reader(self._fd, self._readable)
            self._is_watching = True

    def _unwatch(self) -> None:
        if self._is_watching and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._is_watching = False

    async def aclose(self) -> None:
        self._unwatch()
        if self._failed is None:
            self._failed = anyio.ClosedResourceError()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        os.close(self._fd)


class PipeWriter(ByteSendStream):
    """Bytes to a pipe's file descriptor, written without blocking the event loop."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._broken = False  # a line was cut: nothing more can be written whole

    async def send(self, item: bytes) -> None:
        if self._broken:
            raise anyio.BrokenResourceError("the agent stopped reading mid-line")
        # Written at once while the pipe has room (nearly always: an answer is smaller
        # than its buffer); waiting for it to be writable costs a selector round trip.
        view = memoryview(item)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                if len(view) == len(item):  # nothing written yet: a cancel may end the wait
                    await anyio.wait_writable(self._fd)
                    continue
                # A line begun is finished whatever is cancelled (a relay's time bound):
                # its rest would run into the next line. An agent that takes none of it
                # for _DRAIN_SECONDS is not reading: the pipe is given up.
                with anyio.CancelScope(shield=True), \
                        anyio.move_on_after(_DRAIN_SECONDS) as waited:
                    await anyio.wait_writable(self._fd)
                if waited.cancelled_caught:
                    self._broken = True
                    raise anyio.BrokenResourceError("the agent stopped reading mid-line") from None
                continue
            view = view[written:]

    async def aclose(self) -> None:
        os.close(self._fd)


def claim_stdio() -> tuple[PipeReader, PipeWriter]:
    """The process's stdin and stdout as the MCP wire, with fds 0 and 1 pointed at
    ``/dev/null`` and stderr, so that nothing else in the process can write into
    the protocol stream by accident."""
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return PipeReader(wire_in), PipeWriter(wire_out)
