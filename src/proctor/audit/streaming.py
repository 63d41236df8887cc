"""Streaming the audit log to a collector, at least once, from a cursor in the database.

The order of one delivery (:meth:`AuditStream.deliver_once`):

1. read the stream's cursor (``audit_stream_cursors``: the last position its collector
   acknowledged; a new stream starts at the beginning, or at the head if asked), and the
   chain's head (every event up to it has committed);
2. read up to ``batch_size`` matching events after the cursor, in chain order;
3. send them (those up to the head) as one batch; the sink returns only once the
   collector acknowledged;
4. move the cursor, in its own transaction: to the last event sent when the batch was
   full, else to the head — a filtered stream looked through every event up to it, and
   its next look starts there, not at its last match (events its filter skips are not
   read again on every poll).

A crash between 3 and 4 re-sends that batch: delivery is at least once, in order,
and a collector de-duplicates by ``seq`` (every OCSF event carries it). An
``exclusive`` stream (the approval webhook, which every serving process runs) is
delivered by one process at a time: before each batch the process holds or takes a
lease, a row of the same table (``<name>#lease``) whose position is the lease's end in
milliseconds, a value that also names its holder; a lease left by a crashed process
lapses after ``lease_seconds``. Nothing is
held in memory but the batch being sent: the audit log itself is the queue, so a
collector outage loses nothing and costs no memory. A failed batch is retried after
``first_backoff_seconds`` (0.5 s), then twice as long each time, up to
``max_backoff_seconds``.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from typing import Literal

from sqlalchemy import insert, or_, select, update

from proctor.audit.events import StoredEvent
from proctor.audit.query import EventFilter, iter_events
from proctor.audit.sinks import Sink
from proctor.clock import Clock
from proctor.errors import AuditDeliveryError, ProctorError
from proctor.store import Store
from proctor.store.tables import audit_head, audit_stream_cursors

__all__ = ["AuditStream", "read_cursor"]

log = logging.getLogger(__name__)


def read_cursor(store: Store, name: str) -> int | None:
    """The last position acknowledged on stream ``name``; None for a stream never run."""
    with store.reading() as conn:
        found = conn.execute(select(audit_stream_cursors.c.after_seq)
                             .where(audit_stream_cursors.c.name == name)).scalar()
    return None if found is None else int(found)


class AuditStream:
    """One named stream of the audit log to one sink."""

    def __init__(self, store: Store, sink: Sink, clock: Clock, *, name: str,
                 where: EventFilter | None = None, batch_size: int = 100,
                 start: Literal["beginning", "end"] = "beginning",
                 poll_seconds: float = 1.0, max_backoff_seconds: float = 30.0,
                 first_backoff_seconds: float = 0.5, exclusive: bool = False,
                 lease_seconds: float = 10.0) -> None:
        if not name or len(name) > 64:
            raise ValueError("a stream's name is 1 to 64 characters")
        if not 1 <= batch_size <= 10_000:
            raise ValueError("a batch is 1 to 10000 events")
        self.store, self.sink, self.clock, self.name = store, sink, clock, name
        self.where = where or EventFilter()
        self.batch_size = batch_size
        self.start = start
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.first_backoff_seconds = min(first_backoff_seconds, max_backoff_seconds)
        self.exclusive = exclusive
        self.lease_ms = int(lease_seconds * 1000)
        self._lease_name = name[:58] + "#lease"
        self._lease_until = 0
        self.delivered = 0
        self.failures = 0

    def cursor(self) -> int:
        """The stream's position, created on first use."""
        found = read_cursor(self.store, self.name)
        if found is not None:
            return found
        position = 0
        if self.start == "end":
            with self.store.reading() as conn:
                position = int(conn.execute(select(audit_head.c.seq)).scalar() or 0)
        with self.store.transaction() as conn:
            conn.execute(insert(audit_stream_cursors).values(
                name=self.name, after_seq=position, updated_at=self.clock.now()))
        return position

    def deliver_once(self) -> int:
        """One batch delivered and acknowledged; how many events (0: caught up)."""
        if self.exclusive and not self.hold_lease():
            return 0
        after = self.cursor()
        with self.store.reading() as conn:
            head = int(conn.execute(select(audit_head.c.seq)).scalar() or 0)
        found: list[StoredEvent] = list(itertools.islice(
            iter_events(self.store, self.where, after_seq=after, page=self.batch_size),
            self.batch_size))
        batch = [stored for stored in found if stored.seq <= head]
        # a full batch ends at its last event; else every match up to the head is in it
        upto = batch[-1].seq if len(batch) == self.batch_size else head
        if upto <= after:
            return 0
        if batch:
            self.sink.send(batch)
        with self.store.transaction() as conn:
            conn.execute(update(audit_stream_cursors)
                         .where(audit_stream_cursors.c.name == self.name)
                         .values(after_seq=upto, updated_at=self.clock.now()))
        self.delivered += len(batch)
        return len(batch)

    def hold_lease(self) -> bool:
        """Whether this process delivers the stream now: its lease still has more than half
        to run, or it renewed it, or it took a lapsed (or never taken) one."""
        now = self.clock.now()
        now_ms = int(now.timestamp() * 1000)
        if self._lease_until - now_ms > self.lease_ms // 2:
            return True
        mine = now_ms + self.lease_ms + secrets.randbelow(1000)
        row = audit_stream_cursors.c
        with self.store.transaction() as conn:
            taken = conn.execute(update(audit_stream_cursors).where(
                row.name == self._lease_name,
                or_(row.after_seq < now_ms, row.after_seq == self._lease_until))
                .values(after_seq=mine, updated_at=now)).rowcount
            if not taken and conn.execute(select(row.name).where(
                    row.name == self._lease_name)).first() is None:
                conn.execute(insert(audit_stream_cursors).values(
                    name=self._lease_name, after_seq=mine, updated_at=now))
                taken = 1
        self._lease_until = mine if taken else 0
        return bool(taken)

    def release_lease(self) -> None:
        """Give the lease up (on a clean stop), so another process takes over at once."""
        if not self.exclusive or not self._lease_until:
            return
        row = audit_stream_cursors.c
        with self.store.transaction() as conn:
            conn.execute(update(audit_stream_cursors).where(
                row.name == self._lease_name, row.after_seq == self._lease_until)
                .values(after_seq=0, updated_at=self.clock.now()))
        self._lease_until = 0

    def catch_up(self) -> int:
        """Deliver until nothing is left; a failure raises (for ``--once`` and tests)."""
        total = 0
        while sent := self.deliver_once():
            total += sent
        return total

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Deliver until ``stop`` is set, retrying with backoff; never raises. Caught up,
        it looks again after ``poll_seconds``, or at once when ``wake`` is set."""
        backoff = 0.0
        while not stop.is_set():
            try:
                sent = self.deliver_once()
            except (AuditDeliveryError, ProctorError) as exc:
                self.failures += 1
                backoff = min(self.max_backoff_seconds,
                              backoff * 2 or self.first_backoff_seconds)
                log.warning("audit stream %s to %s: %s; again in %.1f s", self.name,
                            self.sink.description, exc, backoff)
                stop.wait(backoff)
                continue
            except Exception:  # a stream must not die with its thread
                self.failures += 1
                backoff = min(self.max_backoff_seconds,
                              backoff * 2 or self.first_backoff_seconds)
                log.exception("audit stream %s failed; again in %.1f s", self.name, backoff)
                stop.wait(backoff)
                continue
            backoff = 0.0
            if sent == 0:
                if wake is None:
                    stop.wait(self.poll_seconds)
                else:
                    wake.wait(self.poll_seconds)
                    wake.clear()
