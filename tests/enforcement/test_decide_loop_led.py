"""A loop that leads its own audit writes (``AuditLog.lead_on``, the stdio wrapper's on
SQLite): a call decided there is written on the loop's own thread when nobody else is
writing, and answered after its commit; a write under way takes it instead (group
commit), and the loop keeps serving; uses stay exact. (``kill -9`` mid-batch on such a
loop: test_cross_process's, ``forever_on_loop``.) On PostgreSQL a loop never leads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import anyio
import anyio.to_thread
import pytest

from proctor.audit.chain import ChainHead
from proctor.audit.driver import EventRow, WriteCursor
from proctor.enforcement import CallVerdict
from proctor.policy import Outcome
from proctor.runtime import Runtime

from .conftest import Agents
from .test_decide_on_loop import WAIT, _call, _events, _started, _warm, twenty_callers

pytestmark = pytest.mark.anyio


class Seen:
    """The runtime's own batch observer (its risk fold), noting which thread wrote each
    event; with ``hold``, the first batch waits inside its transaction until released."""

    def __init__(self, runtime: Runtime, *, hold: bool = False) -> None:
        self._inner = runtime.risk.folder(published=runtime.agent_view.forget,
                                         rescored=runtime.agent_view.rescored)
        self.writer_of: dict[str, int] = {}
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        self.entered.set()
        assert self.release.wait(WAIT)
        self.writer_of.update((row.event_id, threading.get_ident()) for row in rows)
        self._inner.appending(tx, head, rows)

    def appended(self, head: ChainHead) -> None:
        self._inner.appended(head)


@pytest.fixture
def leading(runtime: Runtime) -> Iterator[Runtime]:
    """The runtime, its audit log observed by the test (put back after)."""
    yield runtime
    runtime.audit.lead_on(None)
    view = runtime.agent_view
    runtime.audit.observe(runtime.risk.folder(published=view.forget, rescored=view.rescored))


async def test_a_leading_loop_writes_its_call_on_its_own_thread_before_answering(
        leading: Runtime, agents: Agents) -> None:
    runtime = leading
    grant, held = await _started(runtime, agents)
    seen = Seen(runtime)
    runtime.audit.observe(seen)
    runtime.audit.lead_on(asyncio.get_running_loop())
    here = threading.get_ident()
    is_sqlite = runtime.store.backend == "sqlite"
    for _ in range(10):  # a view the last write changed sends a call to a thread: a few
        _warm(runtime, grant)
        with anyio.fail_after(WAIT):
            verdict = await runtime.enforcer.decide_held_call_on_loop(held, _call())
        assert (verdict.outcome, verdict.code) == (Outcome.ALLOW, "allow")
        assert verdict.event_id in _events(runtime)  # committed before the answer
        if (seen.writer_of[str(verdict.event_id)] == here) is is_sqlite:
            break
    else:
        pytest.fail("no call was written on the loop's thread" if is_sqlite
                    else "PostgreSQL: a call was written on the loop's thread")


async def test_a_leading_loop_that_finds_a_write_under_way_leaves_its_call_to_it(
        leading: Runtime, agents: Agents) -> None:
    runtime = leading
    grant, held = await _started(runtime, agents)
    other, _ = await _started(runtime, agents)
    seen = Seen(runtime, hold=True)
    runtime.audit.observe(seen)
    runtime.audit.lead_on(asyncio.get_running_loop())
    here = threading.get_ident()
    theirs: list[CallVerdict] = []
    mine: list[CallVerdict] = []
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            # a thread's decision leads a write and is held inside its transaction
            group.start_soon(anyio.to_thread.run_sync, lambda: theirs.append(
                runtime.enforcer.decide_call(other.token, agents.proof(other), _call())))
            await anyio.to_thread.run_sync(seen.entered.wait, WAIT)
            _warm(runtime, grant)

            async def caller() -> None:
                mine.append(await runtime.enforcer.decide_held_call_on_loop(held, _call()))
            group.start_soon(caller)
            await anyio.wait_all_tasks_blocked()  # the caller waits for its write...
            assert not mine
            seen.release.set()  # ...and the loop is free: it gets here
    assert [v.code for v in theirs + mine] == ["allow", "allow"]
    assert mine[0].event_id in _events(runtime)
    assert seen.writer_of[str(mine[0].event_id)] != here  # a thread wrote it, not the loop


async def test_twenty_callers_on_a_leading_loop_get_exactly_the_grants_uses(
        leading: Runtime, agents: Agents) -> None:
    runtime = leading
    runtime.audit.lead_on(asyncio.get_running_loop())
    grant, held = await _started(runtime, agents, max_uses=6)  # one use spent
    _warm(runtime, grant)
    batches = runtime.audit.batches
    await twenty_callers(runtime, held)
    # decided together on the loop, written together: not one commit each
    assert runtime.audit.batches - batches < 20
