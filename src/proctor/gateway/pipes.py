"""An upstream's stdio pipes, framed by the gateway: plain calls answered off the line.

The MCP SDK's ``stdio_client`` parses every line the server writes into its models
and hands it through memory streams to the ``ClientSession``'s dispatcher, which
hands a response through one more stream to the task waiting for it; a request
goes the same way back (a model, a stream, a writer task, a JSON dump). That is
some half a millisecond of CPU per call, more than the decision's commit.

:class:`UpstreamPipes` starts and stops the server process exactly as the SDK's
``stdio_client`` does, with the SDK's own helpers (the command resolved, a new
session and process group; on exit stdin
closed, a grace period, then the process tree terminated and killed, every wait
bounded and shielded), but the server's stderr is a pipe the gateway reads, each
line redacted before it is written to the error log (:mod:`proctor.gateway.stderr`),
its stdin and stdout are read and written on the event loop itself
(:mod:`proctor.gateway.wire`: a request goes out in its caller's turn, and an answer
read while no other line waits settles its request in the read's callback), and it
frames the pipes itself:

- the SDK's ``ClientSession`` still gets every line but the answers to direct
  requests and the messages relayed here (``initialize``, listings, the server's own
  requests and notifications: sampling, elicitation, progress on the session's own
  requests, ``resources/updated``), parsed as the SDK's transport parses them, and
  its messages are written as that transport writes them;
- the server's log messages (``notifications/message``), once its ``initialize``
  is answered (:attr:`UpstreamPipes.version`), are parsed as the SDK's session
  parses them and handed to ``on_log`` (the relay to the agent) here, in the order
  of the lines, and the next line is read only once the message is relayed: a log
  written before an answer reaches the agent before it, on either path (the SDK's
  session would relay it in a task of its own, which a direct answer, or one of
  its own, could overtake; the message was then also lost, its call over);
- a direct request's progress (``notifications/progress`` whose token is the
  request's id: :meth:`UpstreamPipes.request` asks for it so) is checked as the SDK's
  dispatcher checks it (:func:`progress_of`) and relayed to the request's
  ``on_progress`` here, in line order, before the next line is read, so each report
  reaches the agent before the answer; one on a request that did not ask for it, or
  is answered, is dropped, as the SDK's dispatcher drops it;
- :meth:`UpstreamPipes.request` writes a request of its own, under an id of the
  form ``proctor-N``, and takes its answer as a dict straight off the line: the
  result, or :class:`MCPError` for the server's JSON-RPC error. An answer that is
  not JSON the SDK's parser reads (not UTF-8, a byte-order mark, a lone surrogate
  escaped), nested past what the parser takes, or not a JSON-RPC response is
  ``upstream_invalid_result`` when its id can be read from the start of its line
  (else the SDK's session sees it, as before, and the call runs into its
  timeout); an answer to no request in flight (a wrong id, a second answer) goes
  to the SDK's session, which drops it. A request abandoned (timed out, or its
  caller cancelled) is cancelled at the server with ``notifications/cancelled``,
  as the SDK's dispatcher does. The server's end of the pipe closing fails every
  direct request in flight with ``CONNECTION_CLOSED``.

A line longer than ``max_answer_bytes`` (counted while it is read: never held
whole) ends the reading: a line cut off cannot be resynchronised. The direct
request whose id starts the line fails with ``upstream_result_too_large``, every
other request in flight (the SDK session's too) as if the server had closed the
pipe, and the connection is closed (:attr:`UpstreamPipes.broken`); the rest of the
server's output is discarded until it is stopped. An error of the gateway's own while
it handles the server's output ends the reading the same way, every direct request in
flight failing with ``upstream_unavailable`` that names it (:meth:`UpstreamPipes._failed`).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TextIO, cast

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import StdioServerParameters
from mcp.client.stdio import (  # the SDK transport's own process handling: private,
    # the lock pins its version, tests/gateway/test_sdk_private_helpers.py their shape
    _aclose_all,
    _create_platform_compatible_process,
    _drain_stdout,
    _get_executable_command,
    _parse_line,
    _stop_server_process,
    get_default_environment,
)
from mcp.os.win32.utilities import ServerProcess
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, JSONRPCNotification, LoggingMessageNotification
from mcp_types import LoggingMessageNotificationParams as LogParams
from mcp_types import methods as surfaces
from pydantic import ValidationError

from proctor.documents import check_json_text
from proctor.errors import DocumentError, GatewayError
from proctor.gateway.stderr import StderrRedaction, UpstreamStderr
from proctor.gateway.wire import Line, ServerStdin, ServerStdout

__all__ = ["DEFAULT_MAX_ANSWER_BYTES", "OnLog", "OnProgress", "UpstreamPipes", "asking",
           "invalid_answer", "outcome", "progress_of", "relay_log", "relay_progress",
           "too_large"]

log = logging.getLogger(__name__)

_OWN_ID = "proctor-"
_OWN_ID_BYTES = _OWN_ID.encode()
# the id of an answer that cannot be parsed whole, read before its result or error
_ID_IN_HEAD = re.compile(rb'"id"\s*:\s*"(proctor-[0-9]{1,18})"')
_WRITER_FLUSH_SECONDS = 0.5  # as the SDK's stdio_client
_CANCEL_WRITE_SECONDS = 1.0
DEFAULT_MAX_ANSWER_BYTES = 4 << 20  # as the gateway config's ``max_answer_bytes``
_CLOSED = object()  # what a request in flight is settled with when the pipe closes
_LOG = "notifications/message"
_PROGRESS = "notifications/progress"
OnLog = Callable[[LogParams], Awaitable[None]]
OnProgress = Callable[[float, float | None, str | None], Awaitable[None]]
Progress = tuple[str | int, float, float | None, str | None]  # token, progress, total, message


class _Waiter:
    __slots__ = ("answer", "done", "on_progress")

    def __init__(self, on_progress: OnProgress | None) -> None:
        self.done = anyio.Event()
        self.answer: Any = None
        self.on_progress = on_progress

    def settle(self, answer: Any) -> None:
        if not self.done.is_set():
            self.answer = answer
            self.done.set()


class UpstreamPipes:
    """One upstream server process and its pipes; :meth:`open` runs it."""

    def __init__(self, params: StdioServerParameters, *, errlog: TextIO = sys.stderr,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
                 on_log: OnLog | None = None, redaction: StderrRedaction | None = None) -> None:
        self._params = params
        self._redaction = redaction  # of the server's stderr lines (proctor.gateway.stderr)
        self._on_log = on_log
        self.version: str | None = None  # negotiated by ``initialize``: logs relayed here
        self._max_answer = max_answer_bytes
        self.broken = False  # a line over the cap ended the reading
        self._errlog = errlog
        self._process: ServerProcess | None = None
        self._stdin: ServerStdin | None = None
        self._writing = anyio.Lock(fast_acquire=True)
        self._waiting: dict[str, _Waiter] = {}
        self._ids = itertools.count(1)
        self._is_closed = False

    @asynccontextmanager
    async def open(self) -> AsyncIterator[tuple[MemoryObjectReceiveStream[Any],
                                                MemoryObjectSendStream[SessionMessage]]]:
        """Start the server; yields the SDK session's streams (read, write), and stops
        the server on the way out however the block ends."""
        params = self._params
        command = await _get_executable_command(params.command)
        stderr = UpstreamStderr(self._errlog, self._redaction)
        try:  # the server's stderr: a pipe the gateway reads, redacted, into errlog
            process = await _create_platform_compatible_process(
                command=command, args=params.args,
                env=get_default_environment() | (params.env or {}),
                errlog=cast(TextIO, stderr.child_end()), cwd=params.cwd)
        except BaseException:
            stderr.close()
            raise
        stderr.spawned()
        try:  # a process whose pipes cannot be had is stopped, not left running
            self._stdin = ServerStdin(process)
            stdout = ServerStdout(process, limit=self._max_answer, quick=self._quick,
                                  on_overflow=self._overflow, on_failure=self._failed)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _stop_server_process(process)
                await stderr.finish()
            raise
        # No awaits from here until the task group is entered (as the SDK's).
        self._process = process
        to_session, read_stream = anyio.create_memory_object_stream[
            SessionMessage | Exception](0)
        write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](0)
        writer_done = anyio.Event()
        shutting_down = False

        async def read() -> None:
            try:
                async with to_session:
                    try:
                        await stdout.take()
                        await self._read(stdout, to_session)
                    finally:
                        stdout.give_back()  # the transport drains and closes the pipe
                        self._close_waiting()
                        if self.broken:  # the session sees the end now, not at the drain's
                            await to_session.aclose()
                        await _drain_stdout(process)
            except anyio.ClosedResourceError:
                pass  # our own shutdown closed stdout under the read
            except (anyio.BrokenResourceError, ConnectionError):
                if not shutting_down:
                    log.warning("reading the upstream's stdout failed mid-session")
            if stdout.failed is not None and not shutting_down:
                log.warning("reading the upstream's stdout failed mid-session")

        async def write() -> None:
            try:
                async with from_session:
                    async for message in from_session:
                        text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                        await self._send(f"{text}\n".encode(params.encoding,
                                                            params.encoding_error_handler))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                # the server may still be alive: the session sees the connection end
                await to_session.aclose()
            finally:
                writer_done.set()

        async def shutdown() -> None:
            # as the SDK's stdio_client: stop traffic, flush, stop the server, release
            self._close_waiting()
            stdout.give_back()  # before the SDK stops the server and closes its pipes
            read_stream.close()
            write_stream.close()
            with anyio.move_on_after(_WRITER_FLUSH_SECONDS):
                await writer_done.wait()
            await _stop_server_process(process)
            await stderr.finish()  # the server's last lines
            await _aclose_all(read_stream, write_stream, to_session, from_session)
            await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            tasks.start_soon(write)
            tasks.start_soon(stderr.relay)
            try:
                yield read_stream, write_stream
            finally:
                shutting_down = True
                with anyio.CancelScope(shield=True):
                    await shutdown()
                tasks.cancel_scope.cancel()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    async def request(self, method: str, params: dict[str, Any], *,
                      on_progress: OnProgress | None = None) -> dict[str, Any]:
        """Send one request and return its result as the server wrote it (a dict);
        ``on_progress``: asks for progress, each notification of it relayed there in
        line order, before the answer (:func:`asking`).

        Raises :class:`MCPError` with the server's error, or ``CONNECTION_CLOSED``;
        :class:`GatewayError` ``upstream_invalid_result`` for an answer that is not
        a JSON-RPC response. Cancelling the caller cancels the request upstream."""
        if self._is_closed or self._process is None:
            raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
        request_id = f"{_OWN_ID}{next(self._ids)}"
        if on_progress is not None:
            params = asking(params, request_id)
        line = _encode({"jsonrpc": "2.0", "id": request_id, "method": method,
                        "params": params})
        waiter = self._waiting[request_id] = _Waiter(on_progress)
        written = False
        try:
            try:
                written = True
                await self._send(line)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                raise MCPError(code=CONNECTION_CLOSED, message="Connection closed") from None
            await waiter.done.wait()
        except BaseException:
            if written and not waiter.done.is_set():
                await self._cancel(request_id)
            raise
        finally:
            self._waiting.pop(request_id, None)
        return outcome(waiter.answer)

    async def _cancel(self, request_id: str) -> None:
        """Tell the server a request is abandoned (as the SDK's dispatcher does)."""
        line = _encode({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": request_id, "reason": "caller cancelled"}})
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_WRITE_SECONDS), \
                suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await self._send(line)

    async def _send(self, data: bytes) -> None:
        stdin = self._stdin
        assert stdin is not None
        async with self._writing:
            await stdin.send(data)

    async def _read(self, stdout: ServerStdout,
                    to_session: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        """The lines :meth:`_quick` left, in order: the SDK session's, logs, progress."""
        async for line in stdout.lines():
            if self._quick(line):  # an answer behind lines that waited for this task
                continue
            try:
                text = line.decode(self._params.encoding, self._params.encoding_error_handler)
            except UnicodeDecodeError as exc:
                message: SessionMessage | Exception = exc
            else:
                message = _parse_line(text)
                if (await relay_log(message, self.version, self._on_log)
                        or await self._relayed_progress(message)):
                    continue
            try:
                await to_session.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the session is gone; only the drain remains

    def _quick(self, line: Line) -> bool:
        """Whether ``line`` answered a direct request (now settled): read by the stdout
        callback while no other line waits, so in line order."""
        return bool(self._waiting) and _OWN_ID_BYTES in line and self._took(line)

    async def _relayed_progress(self, message: SessionMessage | Exception) -> bool:
        """True for progress on a direct request (its id is the token): relayed if the
        request asked for it and is not answered yet, else dropped, as the SDK's
        dispatcher drops progress on a request done or that did not ask; False for
        anything else (progress on the session's requests too), which the session sees."""
        report = progress_of(message) if self._waiting else None
        waiter = self._waiting.get(report[0]) if report and isinstance(report[0], str) else None
        if report is None or waiter is None:
            return False
        if waiter.on_progress is not None and not waiter.done.is_set():
            await relay_progress(waiter.on_progress, report)
        return True

    def _overflow(self, line: bytes | bytearray) -> None:
        """A line over the cap: the direct request it answers (its id read from the
        line's start) fails with ``upstream_result_too_large``; the caller stops reading."""
        self.broken = True
        log.warning("the upstream wrote a line of more than %d bytes: its connection "
                    "is closed", self._max_answer)
        head = re.split(rb'"(?:result|error)"', line[:4096], maxsplit=1)[0]
        match = _ID_IN_HEAD.search(head)
        waiter = self._waiting.get(match.group(1).decode()) if match else None
        if waiter is not None:
            waiter.settle(too_large(self._max_answer))

    def _failed(self, error: Exception) -> None:
        """Handling the server's output failed (``error``; the reading has ended): every
        direct request in flight fails with ``upstream_unavailable`` and the connection
        is closed, as after a line over the cap."""
        self.broken = True
        log.warning("reading the upstream's stdout failed (%s): its connection is closed",
                    type(error).__name__)
        failure = GatewayError("upstream_unavailable",
                               "the gateway could not read the upstream's answers "
                               f"({type(error).__name__}): its connection is closed")
        for waiter in list(self._waiting.values()):
            waiter.settle(failure)

    def _took(self, line: bytes | bytearray) -> bool:
        """Settle the direct request ``line`` answers; False if it answers none."""
        try:
            # decoded as the SDK's transport decodes it: Python's json would read bytes
            # past a byte-order mark, and a lone surrogate (``"\\ud800"``) is valid JSON
            # but no Unicode text, which the SDK's parser refuses and nothing after this
            # (the output guard's answer, the agent's JSON) can write
            text = line.decode(self._params.encoding, self._params.encoding_error_handler)
            check_json_text(text, what="the answer")
            document = json.loads(text)
        except (ValueError, RecursionError, DocumentError):  # UnicodeDecodeError is one
            head = re.split(rb'"(?:result|error)"', line, maxsplit=1)[0]
            match = _ID_IN_HEAD.search(head)
            waiter = self._waiting.get(match.group(1).decode()) if match else None
            if waiter is None:
                return False
            waiter.settle(invalid_answer("an answer that is not JSON the gateway can read"))
            return True
        if not isinstance(document, dict) or "method" in document:
            return False
        request_id = document.get("id")
        waiter = self._waiting.get(request_id) if isinstance(request_id, str) else None
        if waiter is None:
            return False
        waiter.settle(document)
        return True

    def _close_waiting(self) -> None:
        self._is_closed = True
        for waiter in list(self._waiting.values()):
            waiter.settle(_CLOSED)


async def relay_log(message: SessionMessage | Exception, version: str | None,
                    on_log: OnLog | None) -> bool:
    """Relay ``message`` to ``on_log`` if it is a log message (as the SDK's session
    validates it at ``version``: one it refuses is dropped), and True once it is
    relayed; False for anything else, which the SDK's session sees. The pipes and
    the posts (:mod:`proctor.gateway.posts`) relay a log this way before they read on."""
    if (on_log is None or not isinstance(message, SessionMessage) or version is None
            or not isinstance(message.message, JSONRPCNotification)
            or message.message.method != _LOG):
        return False
    try:
        notification = surfaces.parse_server_notification(_LOG, version, message.message.params)
    except KeyError:
        return False  # not a method of this version: the session's bindings may know it
    except ValidationError:
        log.warning("an upstream log message that is not valid was dropped")
        return True
    if not isinstance(notification, LoggingMessageNotification):
        return False
    try:
        await on_log(notification.params)
    except Exception as exc:  # it costs this message only, as in the SDK's session
        log.warning("an upstream log message was not relayed: %s", type(exc).__name__)
    return True


def asking(params: dict[str, Any], token: str) -> dict[str, Any]:
    """``params`` asking for progress under ``token`` (the request's id, as the SDK's
    dispatcher gives it), whatever ``_meta`` held: the upstream never sees the agent's
    token, and the agent sees only its own (the relay reports on the agent's request)."""
    return {**params, "_meta": {**(params.get("_meta") or {}), "progressToken": token}}


def progress_of(message: SessionMessage | Exception) -> Progress | None:
    """``message``'s progress if it is a ``notifications/progress`` as the SDK's
    dispatcher takes one (a token that is a string or an integer, a progress that is a
    number, neither a boolean; a total that is not a number and a message that is not
    a string left out); None for anything else."""
    if (not isinstance(message, SessionMessage)
            or not isinstance(message.message, JSONRPCNotification)
            or message.message.method != _PROGRESS):
        return None
    params = message.message.params or {}
    match params:
        case {"progressToken": str() | int() as token, "progress": int() | float() as done} if (
                not isinstance(token, bool) and not isinstance(done, bool)):
            total, text = params.get("total"), params.get("message")
            return (token, float(done), float(total) if isinstance(total, int | float) else None,
                    text if isinstance(text, str) else None)
    return None


async def relay_progress(on_progress: OnProgress, report: Progress) -> None:
    """Relay one progress report; an error costs this report only, as in the SDK's
    dispatcher. The pipes and the posts relay progress this way before they read on."""
    _, done, total, text = report
    try:
        await on_progress(done, total, text)
    except Exception as exc:
        log.warning("an upstream progress notification was not relayed: %s",
                    type(exc).__name__)


def _encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def invalid_answer(what: str) -> GatewayError:
    """``upstream_invalid_result``: the upstream answered ``what``."""
    return GatewayError("upstream_invalid_result", f"the upstream answered {what}")


def too_large(limit: int) -> GatewayError:
    """``upstream_result_too_large``: an answer over ``limit`` bytes."""
    return GatewayError("upstream_result_too_large",
                        f"the upstream's answer is over the {limit}-byte limit "
                        "(max_answer_bytes)")


def outcome(answer: Any) -> dict[str, Any]:
    """The result of a JSON-RPC response, or the error it carries, raised (the
    server's own as :class:`MCPError`, a broken answer as ``upstream_invalid_result``,
    a closed connection as ``CONNECTION_CLOSED``)."""
    if answer is _CLOSED:
        raise MCPError(code=CONNECTION_CLOSED, message="Connection closed")
    if isinstance(answer, GatewayError):
        raise answer
    if answer.get("jsonrpc") != "2.0":
        raise invalid_answer("a message that is not JSON-RPC 2.0")
    if "error" in answer and "result" not in answer:
        error = answer["error"]
        if (not isinstance(error, dict) or type(error.get("code")) is not int
                or not isinstance(error.get("message"), str)):
            raise invalid_answer("an error that is not a JSON-RPC error")
        raise MCPError(code=error["code"], message=error["message"], data=error.get("data"))
    if "result" not in answer or "error" in answer:
        raise invalid_answer("a response with neither a result nor an error, or both")
    result = answer["result"]
    if not isinstance(result, dict):
        raise invalid_answer("a result that is not an object")
    return result
