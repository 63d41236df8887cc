"""The one source of time in proctor.

Nothing else calls ``time.time()`` or ``datetime.now()``: every part takes a
:class:`Clock`, so tests pin time exactly and never sleep.

>>> clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
>>> clock.advance(seconds=90).now().isoformat()
'2026-01-01T00:01:30+00:00'
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "SystemClock"]


class Clock(Protocol):
    """Gives the current time as an aware UTC datetime, and a monotonic reading."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The wall clock of this machine."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock:
    """A clock that moves only when told to; for tests and replays."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("a frozen clock needs an aware datetime")
        self._at = at.astimezone(UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._at

    def monotonic(self) -> float:
        return self._mono

    def advance(self, *, seconds: float) -> FrozenClock:
        self._at += timedelta(seconds=seconds)
        self._mono += seconds
        return self
