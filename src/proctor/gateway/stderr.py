"""A stdio upstream's stderr, redacted line by line on its way to the gateway's error log.

The gateway injects secrets into its stdio upstreams' environment; a server that
prints one to stderr must not put it into the operator's log (nor ``proctor mcp
wrap``'s stderr, which agent hosts capture). So the server's fd 2 is a pipe of the
gateway's own (:meth:`UpstreamStderr.child_end`), not the gateway's stderr, and
:meth:`UpstreamStderr.relay` reads it:

- the bytes are cut into lines at ``\\n``; a line is decoded as UTF-8 with
  replacement characters for bytes that are not, and a last line without a newline
  is passed on when the server closes its stderr (it exits, or closes fd 2);
- a line longer than :data:`MAX_LINE_BYTES` is cut there (never held whole): its
  head is passed on without its last characters (as many as the longest known
  form of an injected secret, then the word the cut fell in), with
  ``[cut: line over N bytes]``, and the rest up to the next newline is discarded;
- each line is redacted (:class:`StderrRedaction`): the injected secret values
  (in the forms the guard knows them by: :func:`proctor.oversight.guard.known_forms`)
  replaced by ``[REDACTED:known_secret]``, then the output guard's scan (the same
  redaction as a result's: known secrets and their encodings, known credential
  formats, high-entropy strings); a line the guard cannot scan is withheld;
- what is read is held to the upstream's budget (:class:`StderrBudget`: a token
  bucket of :data:`BUDGET_BYTES_PER_SECOND`, :data:`BUDGET_BURST_BYTES` at once, a
  line costing :data:`LINE_COST_BYTES` more than its length), so that one upstream's
  flood costs the gateway (one process for every agent's sessions) a bounded share
  of its CPU: the lines past it are dropped whole, unscanned and unwritten (never
  passed on unredacted), only their newlines counted. The pipe is still drained (an
  upstream over its budget has it grown to 1 MiB, read in 1 MiB reads), but no faster
  than :data:`DRAIN_BYTES_PER_SECOND`: past that the server's own writes to stderr
  wait, since the drain's copies are the gateway's CPU too. The log says how many
  were dropped, at most once every :data:`NOTICE_SECONDS` (and when the relay ends);
- the lines are written to the error log in a worker thread (a log that blocks holds
  that thread, never the event loop), at most :data:`MAX_WAITING_LINES` waiting for
  it: past that a line is dropped, and the next write says how many were, so the
  server's writes to stderr never wait on the gateway's log.

The relay reads until the server's end of the pipe is closed (by the server and
every process it started); when the server is stopped, the gateway waits at most
:data:`FLUSH_SECONDS` for the rest. Redaction takes out a secret as the server
printed it (and its JSON, percent and base64 forms, via the guard); a server set on
leaking a secret it holds (cut into pieces, or encoded otherwise) can still, as it
can through any channel it has.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable
from typing import NamedTuple, TextIO

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from proctor.clock import Clock, SystemClock
from proctor.gateway.ports import Guard
from proctor.oversight.guard import known_forms

__all__ = ["BUDGET_BURST_BYTES", "BUDGET_BYTES_PER_SECOND", "DRAIN_BYTES_PER_SECOND",
           "FLUSH_SECONDS",
           "LINE_COST_BYTES", "MAX_LINE_BYTES", "MAX_WAITING_LINES", "NOTICE_SECONDS",
           "StderrBudget", "StderrLines", "StderrRedaction", "UpstreamStderr", "cut"]

MAX_LINE_BYTES = 16 << 10
MAX_WAITING_LINES = 256
FLUSH_SECONDS = 1.0
BUDGET_BYTES_PER_SECOND = 64 << 10
BUDGET_BURST_BYTES = 256 << 10
LINE_COST_BYTES = 128  # a line's own work (a scan, a queue slot) whatever its length
NOTICE_SECONDS = 10.0
DRAIN_BYTES_PER_SECOND = 16 << 20
_READ_BYTES = 64 << 10
_DRAIN_BYTES = 1 << 20  # a read while over the budget: fewer wake-ups to drain a flood
_BATCH = 64
_KNOWN = "[REDACTED:known_secret]"
_WITHHELD = "[a line the output guard cannot scan was withheld]"


class StderrBudget:
    """What one upstream's stderr may cost: a token bucket of bytes, ``rate`` a second
    up to ``burst``, a line counting ``line_cost`` bytes more than its length.
    """

    def __init__(self, clock: Clock, *, rate: float = BUDGET_BYTES_PER_SECOND,
                 burst: float = BUDGET_BURST_BYTES, line_cost: int = LINE_COST_BYTES) -> None:
        self._clock = clock
        self.rate = rate
        self._burst = burst
        self._line_cost = line_cost
        self._tokens = burst
        self._at = clock.monotonic()

    def admit(self, data: bytes) -> bytes:
        """The head of ``data`` the budget pays for: all of it, or whole lines (up to a
        newline), or nothing. The rest is to be dropped unread."""
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        newlines = data.count(b"\n")
        cost = len(data) + self._line_cost * newlines
        if cost <= self._tokens:
            self._tokens -= cost
            return data
        if self._tokens <= 0 or not newlines:
            return b""
        # as many whole lines as the tokens left would pay for at this chunk's mean cost
        # (a few more or less: the next chunks pay for what this one overspent)
        keep = data.rfind(b"\n", 0, int(len(data) * self._tokens / cost)) + 1
        head = data[:keep]
        self._tokens -= len(head) + self._line_cost * head.count(b"\n")
        return head


class StderrRedaction:
    """What a line of an upstream's stderr becomes: its injected ``secrets`` replaced,
    then ``guard``'s scan (if any)."""

    def __init__(self, secrets: Iterable[str] = (), guard: Guard | None = None) -> None:
        forms = {f for v in secrets if v for f in known_forms(v)}
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        self._guard = guard
        # the longest form a secret can take in a line (the guard's forms: percent-
        # encoding takes up to 12 characters for one, Go's JSON 6 for `&`): what a cut
        # line loses at its end
        self.margin = max((len(f) for f in forms), default=0)

    def line(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, _KNOWN)
        if self._guard is None:
            return text
        try:
            value = self._guard.scan(text).value
        except Exception:  # fail closed: a line not scanned is not written
            return _WITHHELD
        return value if isinstance(value, str) else _WITHHELD


class _Line(NamedTuple):
    text: str
    is_cut: bool


class StderrLines:
    """Bytes of a stream cut into bounded lines of text (before redaction)."""

    def __init__(self, *, max_line: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_line
        self._skipping = False  # a cut line's rest, discarded up to its newline

    def feed(self, data: bytes) -> list[_Line]:
        """The lines ``data`` ends; a line over the cap is its head, cut."""
        lines: list[_Line] = []
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            start = len(data) if end < 0 else end + 1
            if self._skipping:
                self._skipping = end < 0
                continue
            self._buffer += piece
            if len(self._buffer) > self._max:
                lines.append(self._cut())
                self._skipping = end < 0
            elif end >= 0:
                lines.append(_Line(_text(self._buffer), False))
                self._buffer.clear()
        return lines

    def end(self) -> list[_Line]:
        """The last line, if the stream ended without a newline."""
        if not self._buffer:
            return []
        line = _Line(_text(self._buffer), False)
        self._buffer.clear()
        return [line]

    def drop(self, data: bytes, start: int = 0) -> int:
        """Discard ``data[start:]`` unread, and the line in progress with it: how many
        lines were dropped that were not counted before (a line still going on at the
        end is counted now, and its rest is discarded up to its newline)."""
        if start >= len(data):
            return 0
        newlines = data.count(b"\n", start)
        dropped = newlines - (1 if self._skipping and newlines else 0)
        self._buffer.clear()
        if data[-1] != 0x0A:
            if newlines or not self._skipping:
                dropped += 1
            self._skipping = True
        else:
            self._skipping = False
        return dropped

    def _cut(self) -> _Line:
        head = _text(self._buffer[:self._max])
        self._buffer.clear()
        return _Line(head, True)


def cut(redacted: str, margin: int, max_line: int = MAX_LINE_BYTES) -> str:
    """A cut line's head, redacted, as it is written: without its last ``margin``
    characters (a secret the cut fell in may start there), then the word the cut fell in."""
    head = redacted[:max(len(redacted) - margin, 0)]
    end = max(head.rfind(" "), head.rfind("\t"))
    head = head[:end + 1] if end >= 0 else ""
    return f"{head}[cut: line over {max_line} bytes]"


class UpstreamStderr:
    """One upstream's stderr pipe: :meth:`child_end` for the process, :meth:`relay`
    to read it, :meth:`finish` when the process is stopped."""

    def __init__(self, errlog: TextIO, redaction: StderrRedaction | None = None, *,
                 clock: Clock | None = None, budget: StderrBudget | None = None) -> None:
        self._errlog = errlog
        self._redaction = redaction or StderrRedaction()
        self._clock = clock or SystemClock()
        self._budget = budget or StderrBudget(self._clock)
        self._over_budget = 0  # lines dropped unread, not yet said in the log
        self._noticed_at: float | None = None
        self._pipe_grown = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._done = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._dropped = 0

    def child_end(self) -> int:
        """The write end of the pipe, for the process's stderr."""
        return self._write_fd

    def spawned(self) -> None:
        """The process has its copy of the write end (or was not started): close ours,
        so that the pipe ends when the process's copies do."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1

    def close(self) -> None:
        """Close both ends (the relay never ran)."""
        self.spawned()
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    async def finish(self, timeout: float = FLUSH_SECONDS) -> None:
        """Wait at most ``timeout`` for the relay to end (the server's last lines), then
        stop it."""
        if self._scope is None:  # the relay has not started: it will find the pipe closed
            self.close()
            return
        with anyio.move_on_after(timeout):
            await self._done.wait()
        self._scope.cancel()

    async def relay(self) -> None:
        """Read the pipe until it ends, writing each line redacted to the error log."""
        send, receive = anyio.create_memory_object_stream[_Line](MAX_WAITING_LINES)
        try:
            # shielded: the connection's end cancels its tasks, and the server's last
            # lines come after that; only finish() stops the relay
            with anyio.CancelScope(shield=True) as self._scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._write, receive)
                    await self._read(send)
        finally:
            self._done.set()
            self.close()

    async def _read(self, send: MemoryObjectSendStream[_Line]) -> None:
        lines = StderrLines()
        size = _READ_BYTES
        async with send:
            while True:
                try:
                    data = os.read(self._read_fd, size)
                except BlockingIOError:
                    await anyio.wait_readable(self._read_fd)
                    continue
                except OSError:
                    data = b""
                head = self._budget.admit(data) if data else data
                for line in lines.feed(head) if data else lines.end():
                    try:
                        send.send_nowait(line)
                    except anyio.WouldBlock:
                        self._dropped += 1
                if not data:
                    return
                if len(head) == len(data):
                    size = _READ_BYTES
                    await anyio.lowlevel.checkpoint()
                    continue
                # the rest, after the lines paid for
                self._over_budget += lines.drop(data, len(head))
                self._notice(send)
                size = self._drain()
                # drained no faster than DRAIN_BYTES_PER_SECOND: past it the server's
                # writes to stderr wait, not the gateway's other sessions
                await anyio.sleep((len(data) - len(head)) / DRAIN_BYTES_PER_SECOND)

    def _drain(self) -> int:
        """How much to read while over the budget: a larger pipe (1 MiB, made so only for
        an upstream that went over, as it counts against the user's pipe pages) read in
        larger reads, so that draining a flood takes fewer wake-ups."""
        if not self._pipe_grown:
            self._pipe_grown = True
            with contextlib.suppress(OSError, AttributeError):  # Linux's; else as it is
                fcntl.fcntl(self._read_fd, fcntl.F_SETPIPE_SZ, _DRAIN_BYTES)
        return _DRAIN_BYTES

    def _notice(self, send: MemoryObjectSendStream[_Line]) -> None:
        """Ask the writer to say how many lines were dropped over the budget, at most
        once every NOTICE_SECONDS (it says the rest when the relay ends)."""
        now = self._clock.monotonic()
        if self._noticed_at is not None and now - self._noticed_at < NOTICE_SECONDS:
            return
        self._noticed_at = now
        with contextlib.suppress(anyio.WouldBlock):  # the lines waiting carry it
            send.send_nowait(_NOTICE)

    async def _write(self, receive: MemoryObjectReceiveStream[_Line]) -> None:
        # a thread of its own: a log that blocks never takes the threads the store's
        # calls run in
        limiter = anyio.CapacityLimiter(1)
        async with receive:
            async for line in receive:
                batch = [line]
                while len(batch) < _BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._write_batch(batch, limiter)
        if self._over_budget or self._dropped:  # the server's stderr ended
            await self._write_batch([], limiter)

    async def _write_batch(self, batch: list[_Line], limiter: anyio.CapacityLimiter) -> None:
        dropped, self._dropped = self._dropped, 0
        over = 0
        if not batch or any(line is _NOTICE for line in batch):  # (an empty line == _NOTICE)
            over, self._over_budget = self._over_budget, 0
        await anyio.to_thread.run_sync(self._write_lines, batch, dropped, over,
                                       abandon_on_cancel=True, limiter=limiter)

    def _write_lines(self, batch: list[_Line], dropped: int, over: int = 0) -> None:
        parts = []
        if dropped:
            parts.append(f"[{dropped} lines of the upstream's stderr were dropped: "
                         f"the log did not keep up]\n")
        notice = (f"[{over} lines of the upstream's stderr were dropped unread: over its "
                  f"budget of {self._budget.rate / 1024:g} KiB a second]\n")
        for line in batch:
            if line is not _NOTICE:
                parts.append(f"{self._redacted(line)}\n")
            elif over:  # where the first of them was dropped
                parts.append(notice)
                over = 0
        if over:
            parts.append(notice)
        if not parts:
            return
        try:
            self._errlog.write("".join(parts))
            self._errlog.flush()
        except (OSError, ValueError):  # the log is closed or broken: the lines are lost
            pass

    def _redacted(self, line: _Line) -> str:
        redacted = self._redaction.line(line.text)
        return cut(redacted, self._redaction.margin) if line.is_cut else redacted


_NOTICE = _Line("", False)  # not a line: the writer is to say how many were dropped


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")
