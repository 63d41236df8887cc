"""The time limits of asynchronous audit callers: one loop timer for all of them.

:meth:`~proctor.audit.writer.AuditLog.record_async` bounds each wait for
durability. A loop timer per event (``loop.call_later``, then its cancellation)
cost a measured sixth of the event loop's CPU per event at a few thousand events
a second: each one is a heap entry compared in Python. Here the futures of one
loop wait in lines, one per limit, in the order they were queued, which is also
the order their deadlines fall; one timer stands for the first deadline still
open. As batches are answered, the answered futures leave the front of their
line, and the timer goes when nobody is left waiting.

Everything here runs on the loop's own thread: the callers queue on it, the
writer hands its answers to it (``call_soon_threadsafe``), and the timer fires on it.

At a deadline the caller's write is withdrawn if no batch has taken it yet (the
writer skips it: neither its event nor its effects are ever written) and its future
failed; if a batch has taken it, the future is left to that batch's outcome (written
or failed), so that a failure always means nothing of it was written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from proctor.errors import AuditUnavailableError

__all__ = ["Deadlines", "Withdrawable", "expire"]

log = logging.getLogger(__name__)


class Withdrawable(Protocol):
    """A queued write (:class:`~proctor.audit.writer.Receipt`)."""

    def withdraw(self) -> bool:
        """Withdraw the write unless a batch has taken it; whether it was."""


def expire(future: asyncio.Future[Any], limit: float) -> None:
    """Fail ``future`` as not answered within ``limit`` seconds, unless it is done."""
    if not future.done():
        future.set_exception(AuditUnavailableError(
            f"audit write did not complete within {limit:g} s"))


class Deadlines:
    """The open time limits of one event loop's audit callers."""

    __slots__ = ("_lines", "_loop", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lines: dict[float, deque[tuple[float, asyncio.Future[Any], Withdrawable]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def add(self, future: asyncio.Future[Any], limit: float, write: Withdrawable) -> None:
        """Fail ``future`` if it is not done ``limit`` seconds from now and ``write``
        can still be withdrawn (no batch has taken it); else leave it to the batch."""
        line = self._lines.get(limit)
        if line is None:
            line = self._lines[limit] = deque()
        when = self._loop.time() + limit
        line.append((when, future, write))
        if self._timer is None or when < self._timer_at:  # a shorter limit than so far
            self._schedule(when)

    def prune(self) -> bool:
        """Forget the answered futures at the front of each line; with nobody left
        waiting, drop the timer. Whether anyone is still waiting."""
        waiting = False
        for line in self._lines.values():
            while line and line[0][1].done():
                line.popleft()
            waiting = waiting or bool(line)
        if not waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiting

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        soonest: float | None = None
        for limit, line in self._lines.items():
            while line:
                when, future, write = line[0]
                if not future.done() and when > now:
                    soonest = when if soonest is None else min(soonest, when)
                    break
                line.popleft()
                if future.done():
                    continue
                if write.withdraw():  # no batch will write it: say so
                    expire(future, limit)
                else:  # a batch has it: its outcome answers the future
                    log.warning("an audit write past its %g s limit is in a batch being "
                                "written; leaving its caller to the batch's outcome", limit)
        if soonest is not None:
            self._schedule(soonest)

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(when, self._expire), when
