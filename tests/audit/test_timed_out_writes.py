"""A write whose caller stopped waiting (its time limit ran out) is never written later:
withdrawn while still queued, or, once a batch has taken it, waited for to the batch's
end, so that the caller's answer and the log always agree."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

from proctor.audit import AuditEvent, AuditLog, WriteCursor
from proctor.audit.chain import ChainHead
from proctor.audit.driver import EventRow
from proctor.audit.writer import ChainedRows, RecordedEvent
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError, ProctorError
from proctor.oversight.audited import commit_with_event
from proctor.store import Store
from tests.audit.helpers import agent_event

WAIT = 60.0  # a bound on waits for events that come, never reached


class _Stall:
    """Holds the writer inside the transaction of the batch holding ``event_id`` (its
    write lock held) until ``go`` is set; ``entered`` once it is held there."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        self.entered = threading.Event()
        self.go = threading.Event()

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        assert isinstance(rows, ChainedRows)
        if any(event.id == self.event_id for event in rows.events):
            self.entered.set()
            assert self.go.wait(WAIT)

    def appended(self, head: ChainHead) -> None:
        pass


class _Change:
    """A change made as the effects of its event (oversight.audited.Change)."""

    def __init__(self) -> None:
        self.applied = 0
        self.refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.applied += 1
        return None


def _written(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql(
            "SELECT event_id FROM audit_events ORDER BY seq")]


def test_a_change_whose_write_timed_out_in_the_queue_is_made_alone_and_never_written_later(
        store: Store, clock: FrozenClock) -> None:
    first, change_event, after = agent_event(clock, 1), agent_event(clock, 2), agent_event(clock, 3)
    log = AuditLog(store, clock=clock, timeout=0.05)
    stall = _Stall(first.id)
    log.observe(stall)
    change, made_alone = _Change(), threading.Event()
    try:
        log.submit(first)  # the writer thread writes it, and stalls in its transaction
        assert stall.entered.wait(WAIT)
        with pytest.raises(AuditUnavailableError, match="took effect but could not be audited"):
            commit_with_event(log, change_event, change, alone=made_alone.set)
        assert made_alone.is_set()  # the fallback: the change made without its event
        stall.go.set()  # the stall ends: the batch commits, and the writer goes on
        log.record(after, timeout=WAIT)
    finally:
        stall.go.set()
        log.close()
    # one true account: the change made alone, and no event says it was made with one
    assert change.applied == 0
    assert _written(store) == [first.id, after.id]


def test_a_write_taken_into_a_batch_when_its_time_runs_out_gives_the_batch_outcome(
        store: Store, clock: FrozenClock) -> None:
    event = agent_event(clock, 1)
    log = AuditLog(store, clock=clock, timeout=20.0)
    stall = _Stall(event.id)
    log.observe(stall)
    change = _Change()

    class _GoOnWaiting(logging.Handler):  # the caller waits on past its limit: end the stall
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for the batch's outcome" in record.getMessage():
                stall.go.set()

    handler = _GoOnWaiting(logging.WARNING)
    logging.getLogger("proctor.audit.writer").addHandler(handler)
    try:
        receipt = log.submit(event, effects=change)
        assert stall.entered.wait(WAIT)  # in a batch, its transaction under way
        recorded = receipt.settled(0)  # its time is out at once
    finally:
        logging.getLogger("proctor.audit.writer").removeHandler(handler)
        stall.go.set()
        log.close()
    assert isinstance(recorded, RecordedEvent) and recorded.event_id == event.id
    assert change.applied == 1
    assert _written(store) == [event.id]
