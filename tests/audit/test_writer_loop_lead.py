"""A loop that leads its audit writes (``AuditLog.lead_on``, SQLite) never waits for
another process's write lock: while a second process holds it, the loop's write goes to
the writer thread and the loop keeps serving; once the lock is free the loop leads again.
What it gives up is written first, in order; several callers at once are the writer
thread's (one batch), and a caller whose event a batch took leads nothing."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy.pool import QueuePool

from proctor.audit import AuditLog
from proctor.audit.chain import ChainHead
from proctor.audit.driver import EventRow, WriteCursor
from proctor.audit.writer import RecordedEvent
from proctor.clock import FrozenClock
from proctor.store import Store
from tests.audit.helpers import agent_event
from tests.conftest import sqlite_only

pytestmark = [pytest.mark.anyio, sqlite_only]

WAIT = 30.0

# a second process: takes SQLite's write lock, says so, holds it until told to go
HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
print("free", flush=True)
"""


class Writers:
    """Which thread wrote each event, and in what order."""

    def __init__(self) -> None:
        self.writer_of: dict[str, int] = {}
        self.order: list[str] = []

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        for row in rows:
            self.writer_of[row.event_id] = threading.get_ident()
            self.order.append(row.event_id)

    def appended(self, head: ChainHead) -> None:
        pass


@pytest.fixture
def log(store: Store, clock: FrozenClock) -> Iterator[AuditLog]:
    # the writer thread waits for another's lock (busy_timeout): the loop never does
    audit = AuditLog(store, clock=clock, timeout=WAIT, busy_timeout_ms=10_000)
    try:
        yield audit
    finally:
        audit.lead_on(None)
        audit.close()


async def _holder(store: Store) -> asyncio.subprocess.Process:
    path = store.engine.url.database
    assert path
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, path, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert holder.stdout is not None
    assert await asyncio.wait_for(holder.stdout.readline(), WAIT) == b"held\n"
    return holder


async def _release(holder: asyncio.subprocess.Process) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(b"go\n")
    await holder.stdin.drain()
    assert await asyncio.wait_for(holder.stdout.readline(), WAIT) == b"free\n"


async def _led_on_loop(log: AuditLog, clock: FrozenClock, writers: Writers,
                      first: int) -> RecordedEvent:
    """Record events until one is written on this loop's thread (the writer thread may
    still hold the lead from a batch before, and take the next event with it)."""
    here = threading.get_ident()
    for n in range(first, first + 20):
        recorded = await asyncio.wait_for(log.record_async(agent_event(clock, n)), WAIT)
        if writers.writer_of[recorded.event_id] == here:
            return recorded
    pytest.fail("no event was written on the loop's thread")


async def test_a_leading_loop_never_waits_for_another_processs_write_lock(
        log: AuditLog, store: Store, clock: FrozenClock) -> None:
    writers = Writers()
    log.observe(writers)
    log.lead_on(asyncio.get_running_loop())
    here = threading.get_ident()
    led = await _led_on_loop(log, clock, writers, 0)  # the head known: the loop writes
    holder = await _holder(store)
    try:
        waiting = asyncio.ensure_future(log.record_async(agent_event(clock, 100)))
        served = 0
        for _ in range(20):  # the loop serves on: its write did not wait for the lock
            await asyncio.sleep(0)
            served += 1
        assert served == 20
        assert not waiting.done()  # neither written nor failed: the writer thread waits
        await _release(holder)
        given_up = await asyncio.wait_for(waiting, WAIT)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
    assert writers.writer_of[given_up.event_id] != here  # the writer thread wrote it
    assert given_up.seq == led.seq + 1
    again = await _led_on_loop(log, clock, writers, 200)  # the lock free: the loop leads
    assert again.seq > given_up.seq


async def test_what_a_loop_gives_up_is_written_before_what_was_queued_after_it(
        log: AuditLog, store: Store, clock: FrozenClock) -> None:
    writers = Writers()
    log.observe(writers)
    log.lead_on(asyncio.get_running_loop())
    await asyncio.wait_for(log.record_async(agent_event(clock, 0)), WAIT)  # the head read
    holder = await _holder(store)
    try:
        # a lone caller: the loop tries its event, and gives it up
        callers = [asyncio.ensure_future(log.record_async(agent_event(clock, 1)))]
        for _ in range(5):
            await asyncio.sleep(0)
        assert not callers[0].done()
        callers += [asyncio.ensure_future(log.record_async(agent_event(clock, n)))
                    for n in range(2, 5)]
        for _ in range(5):
            await asyncio.sleep(0)
        await _release(holder)
        recorded = await asyncio.wait_for(asyncio.gather(*callers), WAIT)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
    ids = [r.event_id for r in recorded]
    assert writers.order[-4:] == ids
    assert [r.seq for r in recorded] == list(range(recorded[0].seq, recorded[0].seq + 4))


async def test_callers_on_a_leading_loop_that_keep_calling_share_their_batches(
        log: AuditLog, clock: FrozenClock) -> None:
    # before: a caller whose event a batch had taken still led, and wrote whatever was
    # queued since (another caller's next event) alone: one batch per event
    log.lead_on(asyncio.get_running_loop())
    await asyncio.wait_for(log.record_async(agent_event(clock, 0)), WAIT)  # the head read
    batches = log.batches

    async def caller(first: int) -> None:
        for n in range(first, first + 5):
            await log.record_async(agent_event(clock, n))

    here = threading.get_ident()
    writers = Writers()
    log.observe(writers)
    await asyncio.wait_for(asyncio.gather(*(caller(10 * k) for k in range(32))), WAIT)
    assert log.events_written >= 161
    assert log.batches - batches <= 40  # 160 events: about 5 batches of 32
    # together, they are the writer thread's: its commit overlaps the loop's work
    assert sum(writer == here for writer in writers.writer_of.values()) <= 8


async def test_closing_gives_the_connection_back_with_the_busy_timeout_it_came_with(
        store: Store, clock: FrozenClock) -> None:
    """A write the loop led set the connection's busy_timeout to 0; the pool's connect
    hook does not run again for a pooled connection, so the log gives it back as it
    came: the next user of that connection waits for another's lock as it should."""
    def busy_timeouts() -> list[int]:
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)
        held = [store.engine.raw_connection() for _ in range(pool.size())]
        try:
            return [int(proxy.dbapi_connection.execute(  # type: ignore[union-attr]
                "PRAGMA busy_timeout").fetchone()[0]) for proxy in held]
        finally:
            for proxy in held:
                proxy.close()

    given = busy_timeouts()
    assert all(given)
    audit = AuditLog(store, clock=clock, timeout=WAIT)
    audit.lead_on(asyncio.get_running_loop())
    try:
        writers = Writers()
        audit.observe(writers)
        await asyncio.to_thread(audit.record, agent_event(clock, 0))  # the head, known
        event = agent_event(clock, 1)
        await audit.record_async(event)
        assert writers.writer_of[event.id] == threading.get_ident()  # led on the loop
    finally:
        audit.lead_on(None)
        audit.close()
    assert busy_timeouts() == given
