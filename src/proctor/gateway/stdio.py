"""The agent-facing stdio transport: newline-delimited JSON-RPC with a size cap.

The SDK's ``stdio_server`` reads whole lines of any length and drops lines it
cannot parse without an answer. This transport answers instead:

- a line over the cap is discarded as it streams in (it is never held whole) and
  answered ``-32600 message_too_large``, with the request's id when it can be read
  from the start of the line (JSON-RPC clients put ``id`` before ``params``);
- a line nested deeper than :data:`proctor.documents.MAX_DEPTH` is answered
  ``-32600 message_too_deep`` (with its id as above) before anything parses it;
- a line that is not JSON is answered ``-32700 parse_error``; JSON that is not a
  JSON-RPC message, ``-32600 invalid_request`` (with its id if it has one);
- an answer that cannot be written as JSON (an id or a value JSON cannot hold)
  goes out as an error without that id, or as ``-32603`` for its request: what
  goes out never ends the session either.

It also knows which requests are still unanswered, so that a closing session can
let its last error responses reach the agent before the pipe closes
(:meth:`StdioTransport.serve` with ``stop``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.lowlevel.server import Server
from mcp.shared.message import SessionMessage
from mcp_types import INTERNAL_ERROR, ErrorData, JSONRPCError

from proctor.codes import Code, rpc_code
from proctor.documents import MAX_DEPTH, check_json_nesting, parse_json
from proctor.errors import DocumentError
from proctor.gateway.rpc import PREFIX_BYTES, request_id_in_prefix

__all__ = ["PipeReader", "PipeWriter", "StdioTransport", "claim_stdio"]

log = logging.getLogger(__name__)

_DRAIN_SECONDS = 5.0

ToServer = MemoryObjectSendStream[SessionMessage | Exception]
FromServer = MemoryObjectSendStream[SessionMessage]


class StdioTransport:
    """Serves one MCP ``Server`` over a byte stream pair."""

    def __init__(self, reader: ByteReceiveStream, writer: ByteSendStream, *,
                 max_message_bytes: int) -> None:
        self._reader = reader
        self._writer = writer
        self._max = max_message_bytes
        self._outstanding: set[types.RequestId] = set()
        self._answered = anyio.Event()

    async def serve(self, server: Server[Any], *, stop: anyio.Event | None = None) -> None:
        """Serve until the agent closes its end, or ``stop`` is set (then pending
        requests are answered first, for up to five seconds)."""
        to_server, server_in = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        server_out, from_server = anyio.create_memory_object_stream[SessionMessage](0)
        reading, stopping = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._read, to_server, server_out.clone(), reading)
            # The writer ends by itself once every sender is closed: the last answers
            # are written, not cut off.
            tasks.start_soon(self._write, from_server)
            if stop is not None:
                tasks.start_soon(self._stop_when, stop, reading, stopping)
            await server.run(server_in, server_out, server.create_initialization_options())
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

    async def _deliver(self, line: bytes, to_server: ToServer, errors: FromServer) -> None:
        try:
            check_json_nesting(line, what="the message")
            message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except DocumentError as exc:
            await self._unreadable(line, exc, errors)
            return
        except ValueError:
            await self._reject(line, errors)
            return
        if isinstance(message, types.JSONRPCRequest):
            self._outstanding.add(message.id)
        await to_server.send(SessionMessage(message))

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
                    await self._writer.send((text + "\n").encode("utf-8"))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    return
                if isinstance(message, types.JSONRPCResponse | JSONRPCError):
                    self._outstanding.discard(message.id)
                    self._answered.set()


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
    so cancellable, unlike a read in a worker thread)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            await anyio.wait_readable(self._fd)
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        os.close(self._fd)


class PipeWriter(ByteSendStream):
    """Bytes to a pipe's file descriptor, written without blocking the event loop."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    async def send(self, item: bytes) -> None:
        # Written at once while the pipe has room (nearly always: an answer is smaller
        # than its buffer); waiting for it to be writable costs a selector round trip.
        view = memoryview(item)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self._fd)
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
