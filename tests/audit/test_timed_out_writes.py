"""A write whose caller stopped waiting (its time limit ran out) is never written later:
withdrawn while still queued, or, once a batch has taken it, waited for to the batch's
end, so that the caller's answer and the log always agree."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence

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


def _timed_out_behind_a_stalled_batch(
        store: Store, clock: FrozenClock, timeout: float,
        time_out: Callable[[AuditLog, AuditEvent, _Change], None]) -> None:
    """``time_out`` writes an event with a change while the writer is held in the batch
    before it, and its time runs out there; then the stall ends and the log goes on: the
    change never applied, its event never written."""
    first, late, after = agent_event(clock, 1), agent_event(clock, 2), agent_event(clock, 3)
    log = AuditLog(store, clock=clock, timeout=timeout)
    stall = _Stall(first.id)
    log.observe(stall)
    change = _Change()
    try:
        log.submit(first)  # the writer thread writes it, and stalls in its transaction
        assert stall.entered.wait(WAIT)
        time_out(log, late, change)
        stall.go.set()  # the stall ends: the batch commits, and the writer goes on
        log.record(after, timeout=WAIT)
    finally:
        stall.go.set()
        log.close()
    assert change.applied == 0
    assert _written(store) == [first.id, after.id]


def test_a_change_whose_write_timed_out_in_the_queue_is_made_alone_and_never_written_later(
        store: Store, clock: FrozenClock) -> None:
    def made_alone(log: AuditLog, change_event: AuditEvent, change: _Change) -> None:
        alone = threading.Event()
        with pytest.raises(AuditUnavailableError, match="took effect but could not be audited"):
            commit_with_event(log, change_event, change, alone=alone.set)
        assert alone.is_set()  # the fallback: the change made without its event

    # one true account: the change made alone, and no event says it was made with one
    _timed_out_behind_a_stalled_batch(store, clock, 0.05, made_alone)


def _taken_when_its_time_runs_out(
        store: Store, clock: FrozenClock,
        wait: Callable[[AuditLog, AuditEvent, _Change, threading.Event], RecordedEvent | None],
) -> None:
    """``wait`` writes an event with a change, and waits for it past its time limit once
    its batch (held by the test) has taken it; the writer's warning that the caller is
    left to the batch ends the stall: the batch's outcome is the caller's answer."""
    event = agent_event(clock, 1)
    log = AuditLog(store, clock=clock, timeout=WAIT)
    stall = _Stall(event.id)
    log.observe(stall)
    change = _Change()

    class _GoOn(logging.Handler):  # the caller is left to the batch: end the stall
        def emit(self, record: logging.LogRecord) -> None:
            if "the batch's outcome" in record.getMessage():
                stall.go.set()

    handler = _GoOn(logging.WARNING)
    logging.getLogger("proctor.audit").addHandler(handler)
    try:
        recorded = wait(log, event, change, stall.entered)
    finally:
        logging.getLogger("proctor.audit").removeHandler(handler)
        stall.go.set()
        log.close()
    assert isinstance(recorded, RecordedEvent) and recorded.event_id == event.id
    assert change.applied == 1
    assert _written(store) == [event.id]


def test_a_write_taken_into_a_batch_when_its_time_runs_out_gives_the_batch_outcome(
        store: Store, clock: FrozenClock) -> None:
    def settled(log: AuditLog, event: AuditEvent, change: _Change,
                entered: threading.Event) -> RecordedEvent | None:
        receipt = log.submit(event, effects=change)
        assert entered.wait(WAIT)  # in a batch, its transaction under way
        return receipt.settled(0)  # its time is out at once

    _taken_when_its_time_runs_out(store, clock, settled)


class _ShiftedLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test moves on: a deadline passes when it says."""

    shift = 0.0

    def time(self) -> float:
        return super().time() + self.shift


def test_an_async_write_whose_deadline_passes_while_the_writer_is_stalled_is_never_written(
        store: Store, clock: FrozenClock) -> None:
    async def told_so(log: AuditLog, late: AuditEvent, change: _Change) -> None:
        waiting = asyncio.ensure_future(log.record_with_async(late, change, timeout=WAIT))
        await asyncio.sleep(0)  # queued behind the stalled batch
        asyncio.get_running_loop().shift = 2 * WAIT  # type: ignore[attr-defined]
        with pytest.raises(AuditUnavailableError, match="did not complete within"):
            await waiting

    def on_loop(log: AuditLog, late: AuditEvent, change: _Change) -> None:
        with asyncio.Runner(loop_factory=_ShiftedLoop) as runner:
            runner.run(told_so(log, late, change))

    # the caller was told it was not written (a deny, on the decision path): nor was it
    _timed_out_behind_a_stalled_batch(store, clock, WAIT, on_loop)


def test_an_async_write_in_a_batch_when_its_deadline_passes_gets_the_batch_outcome(
        store: Store, clock: FrozenClock) -> None:
    async def answered(log: AuditLog, event: AuditEvent, change: _Change,
                       entered: threading.Event) -> RecordedEvent | None:
        waiting = asyncio.ensure_future(log.record_with_async(event, change, timeout=WAIT))
        assert await asyncio.to_thread(entered.wait, WAIT)  # its batch under way
        asyncio.get_running_loop().shift = 2 * WAIT  # type: ignore[attr-defined]
        return await waiting

    def on_loop(log: AuditLog, event: AuditEvent, change: _Change,
                entered: threading.Event) -> RecordedEvent | None:
        with asyncio.Runner(loop_factory=_ShiftedLoop) as runner:
            return runner.run(answered(log, event, change, entered))

    _taken_when_its_time_runs_out(store, clock, on_loop)
