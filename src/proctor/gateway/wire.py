"""A stdio upstream's pipes on the event loop: its stdin written at once, its stdout read
by a callback.

The server process is started by the SDK's helpers (:mod:`proctor.gateway.pipes`) on
anyio's asyncio backend, which wraps asyncio's subprocess streams. Through them, one
line written costs a task switch (anyio's ``send`` yields to the loop after each
write), and one chunk read three turns of the loop (the pipe's transport reads it and
schedules the subprocess protocol, which feeds the ``StreamReader``, which wakes the
reading task, which wakes the task that waits for the answer).

:class:`ServerStdin` writes on the pipe's transport directly: a line goes out in the
caller's turn (the transport writes what the pipe takes and buffers the rest;
the caller waits only while the buffer is over its mark). :class:`ServerStdout` takes
the stdout pipe from its transport (paused, and resumed when it gives the pipe back,
so that the SDK's drain and close work on it as before) and reads it in a callback of
the loop, kept registered: it splits the chunks into lines and hands each to
``quick``, which may settle it there (a direct request's answer: the waiting task
runs in the next turn); every other line waits in order for :meth:`ServerStdout.lines`,
and while one waits the pipe is not read (the server is held by the pipe's own
buffer, as before by the session's stream). A line over ``limit`` bytes (counted
while it is read: never held whole) ends the reading; ``on_overflow`` gets its start.
An error while a chunk is handled (in ``quick``, say) ends the reading too: the lines
after it cannot be placed, so ``on_failure`` gets the error (the pipes fail the calls
in flight with it) rather than the loop's exception handler (which would leave the
callback registered, the chunk's other lines lost and their calls waiting).

The private attributes read here, :data:`PRIVATE_ATTRIBUTES` (anyio's process wraps
asyncio's; asyncio's process keeps its transport; a ``StreamReader`` its buffer and its
end), are checked by :func:`check_private_attributes` when a process is wrapped (a
library that changed them is a clear error at the upstream's start, not a wrong read)
and pinned by tests/gateway/test_upstream_wire.py.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from mcp.os.win32.utilities import ServerProcess

__all__ = ["PRIVATE_ATTRIBUTES", "Line", "ServerStdin", "ServerStdout",
           "check_private_attributes"]

_CHUNK = 65536
Line = bytes | bytearray

# what this module reads that its libraries do not publish: (whose, attribute, its type)
PRIVATE_ATTRIBUTES: tuple[tuple[str, str, type | tuple[type, ...]], ...] = (
    ("anyio's Process", "_process", asyncio.subprocess.Process),
    ("asyncio's Process", "_transport", asyncio.SubprocessTransport),
    ("asyncio's StreamReader", "_buffer", bytearray),
    ("asyncio's StreamReader", "_eof", bool),
)


def check_private_attributes(process: ServerProcess) -> None:
    """Raise RuntimeError naming the first of :data:`PRIVATE_ATTRIBUTES` that ``process``
    (anyio's, over asyncio's, with its stdout pipe) does not have as this module reads it."""
    inner = getattr(process, "_process", None)
    holders = {"anyio's Process": process, "asyncio's Process": inner,
               "asyncio's StreamReader": getattr(inner, "stdout", None)}
    for whose, name, kind in PRIVATE_ATTRIBUTES:
        if not isinstance(getattr(holders[whose], name, None), kind):
            raise RuntimeError(f"{whose} has no {name} as proctor.gateway.wire reads it "
                               "(a changed asyncio or anyio)")


def _subprocess(process: ServerProcess) -> Any:
    """The asyncio process under anyio's (the backend the gateway runs on)."""
    check_private_attributes(process)
    inner: Any = getattr(process, "_process", None)
    return inner


class ServerStdin:
    """The server's stdin: one line written in the caller's turn of the loop."""

    def __init__(self, process: ServerProcess) -> None:
        stream = _subprocess(process).stdin
        if not isinstance(stream, asyncio.StreamWriter):
            raise RuntimeError("the upstream's process has no stdin pipe")
        self._stream = stream

    async def send(self, data: bytes) -> None:
        """Write ``data``; waits only while the pipe's buffer is over its mark. Raises
        ``BrokenResourceError`` once the pipe is closed (as anyio's stream does)."""
        stream = self._stream
        if stream.is_closing():
            raise anyio.BrokenResourceError("the upstream's stdin is closed")
        stream.write(data)  # what the pipe takes now is written now, the rest buffered
        if stream.transport.get_write_buffer_size():
            try:
                await stream.drain()
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise anyio.BrokenResourceError("the upstream's stdin is closed") from exc
        if stream.is_closing():  # the write failed: the transport closed the pipe
            raise anyio.BrokenResourceError("the upstream's stdin is closed")


class ServerStdout:
    """The server's stdout read by a callback of the loop (see the module's docstring)."""

    def __init__(self, process: ServerProcess, *, limit: int,
                 quick: Callable[[Line], bool],
                 on_overflow: Callable[[Line], None],
                 on_failure: Callable[[Exception], None]) -> None:
        inner = _subprocess(process)
        self._reader = inner.stdout
        self._transport = inner._transport.get_pipe_transport(1)
        if not isinstance(self._reader, asyncio.StreamReader) or self._transport is None:
            raise RuntimeError("the upstream's process has no stdout pipe")
        self._fd: int = self._transport.get_extra_info("pipe").fileno()
        self._limit = limit
        self._quick = quick
        self._on_overflow = on_overflow
        self._on_failure = on_failure
        self._buffer = bytearray()
        self._waiting: collections.deque[Line] = collections.deque()
        self._more = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_reading = False
        self.is_over = False  # the end of the stream, a line over the cap, or given back
        self.failed: Exception | None = None  # the pipe's read, or the handling of a chunk

    async def take(self) -> None:
        """Take the pipe from its transport: what the transport read already (a server
        may write before it is asked anything) comes first."""
        self._loop = asyncio.get_running_loop()
        self._transport.pause_reading()
        # a chunk the transport read before the pause reaches the reader in the next
        # turn (the subprocess protocol is called soon): let it land
        await asyncio.sleep(0)
        reader = self._reader
        seen = bytes(reader._buffer)
        reader._buffer.clear()
        ended = reader._eof or self._transport.is_closing()
        if seen:
            self._handled(seen)
        if ended:
            self._end()
        elif not self.is_over and not self._waiting:
            self._resume()

    def give_back(self) -> None:
        """Stop reading; the transport reads the pipe again (for the SDK's drain)."""
        self._pause()
        self.is_over = True
        self._more.set()
        if not self._transport.is_closing():
            self._transport.resume_reading()

    async def lines(self) -> AsyncIterator[Line]:
        """The lines ``quick`` did not settle, in order, until the stream is over."""
        while True:
            while self._waiting:
                yield self._waiting.popleft()
            if self.is_over:
                return
            self._resume()  # nothing waits: the callback reads on
            self._more.clear()
            await self._more.wait()

    # the callback

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.failed = exc
            self._end()
            return
        if not data:
            self._end()
            return
        self._handled(data)
        if self._waiting or self.is_over:
            self._pause()  # the task takes them in order; the pipe holds the rest
            self._more.set()

    def _handled(self, data: bytes) -> None:
        """:meth:`_received`, an error in it ending the reading (see the module's
        docstring): never raised into the loop."""
        try:
            self._received(data)
        except Exception as exc:
            self.failed = exc
            self._buffer = bytearray()  # the lines already waiting keep their order
            self._end()
            self._on_failure(exc)

    def _received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if b"\n" not in data:
            if len(buffer) > self._limit:
                self._overflow(buffer)
            return
        *lines, rest = buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for line in lines:
            if len(line) > self._limit:
                self._overflow(line)
                return
            if self._waiting or not self._quick(line):
                self._waiting.append(line)
        if len(self._buffer) > self._limit:
            self._overflow(self._buffer)

    def _overflow(self, line: Line) -> None:
        self._on_overflow(line)
        self._buffer = bytearray()
        self._end()

    def _end(self) -> None:
        self._pause()
        self.is_over = True
        self._more.set()

    def _resume(self) -> None:
        if not self._is_reading and not self.is_over and self._loop is not None:
            self._loop.add_reader(self._fd, self._readable)
            self._is_reading = True

    def _pause(self) -> None:
        if self._is_reading and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._is_reading = False
