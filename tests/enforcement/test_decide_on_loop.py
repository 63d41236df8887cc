"""A decision on the caller's event loop (``Enforcer.decide_held_call_on_loop``, the stdio
wrapper's): its CPU on the loop when the views are warm, its write awaited there, and
every guarantee of the thread's decision kept — the answer after the commit, a
cancelled caller's decision committed all the same, a failed write a deny, a
revocation committed by another process refused by the write, uses counted exactly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest

from proctor.audit import EventFilter, search_events
from proctor.audit.chain import ChainHead
from proctor.audit.driver import EventRow, WriteCursor
from proctor.audit.writer import BatchObserver
from proctor.enforcement import CallVerdict, ToolCall
from proctor.grants import HeldGrant, IssuedGrant
from proctor.policy import Decision, DecisionRequest, Outcome
from proctor.runtime import Runtime
from proctor.store import blocking

from .conftest import SUPPORT, TARGET, Agents, refund
from .test_cross_process import Other

pytestmark = pytest.mark.anyio

REFUND = [{"tool": "crm/issue_refund"}]
WAIT = 60  # seconds: a bound on every wait, never a pause


class Gate:
    """The audit writer's observer (the runtime's risk fold, as the runtime gives it)
    held inside a batch's transaction until released, or failing that batch."""

    def __init__(self, runtime: Runtime, *, fail: bool = False) -> None:
        self._inner = runtime.risk.folder(published=runtime.agent_view.forget,
                                         rescored=runtime.agent_view.rescored)
        self.entered = threading.Event()
        self.release = threading.Event()
        self._fail = fail

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        self.entered.set()
        if self._fail:
            raise RuntimeError("the batch fails")
        assert self.release.wait(WAIT)
        self._inner.appending(tx, head, rows)

    def appended(self, head: ChainHead) -> None:
        self._inner.appended(head)


def _observed(runtime: Runtime, gate: BatchObserver | None) -> None:
    view = runtime.agent_view
    runtime.audit.observe(gate or runtime.risk.folder(published=view.forget,
                                                      rescored=view.rescored))


class Threads:
    """The threads the engine decided on (the real engine, called through)."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[int] = []
        decide: Callable[..., Decision] = runtime.engine.decide

        def deciding(request: DecisionRequest, **kwargs: Any) -> Decision:
            self.seen.append(threading.get_ident())
            return decide(request, **kwargs)
        monkeypatch.setattr(runtime.engine, "decide", deciding)


def _held(runtime: Runtime, agents: Agents, grant: IssuedGrant) -> HeldGrant:
    return runtime.grants.hold(grant.token, agents.keys[SUPPORT])


async def _started(runtime: Runtime, agents: Agents, *, max_uses: int | None = None
                   ) -> tuple[IssuedGrant, HeldGrant]:
    """A grant, held, and its first call allowed."""
    grant = agents.grant(SUPPORT, REFUND, max_uses=max_uses)
    held = _held(runtime, agents, grant)
    with anyio.fail_after(WAIT):
        assert (await runtime.enforcer.decide_held_call_on_loop(held, _call())).is_allowed
    return grant, held


def _warm(runtime: Runtime, grant: IssuedGrant) -> None:
    """The grant's agent and task held by the views (each write may change them: the
    risk fold's new score, the task's data sensitivity), as a steady stream keeps them."""
    runtime.agent_view.find(SUPPORT)
    runtime.task_view.task(grant.claims.task_id)


def _call(amount: int = 100) -> ToolCall:
    return ToolCall("crm/issue_refund", refund(amount), target=TARGET)


def _events(runtime: Runtime) -> dict[str, Any]:
    return {e.event["id"]: e.event for e in search_events(runtime.store, EventFilter(),
                                                          limit=1000)}


async def test_a_warm_call_is_decided_on_the_loops_thread_and_answered_once_committed(
        runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    grant, held = await _started(runtime, agents)
    threads = Threads(runtime, monkeypatch)
    # on PostgreSQL the news of a write (the risk fold's new score) reaches the views
    # when it arrives, and may find the agent just read again: a few calls at most
    for _ in range(10):
        _warm(runtime, grant)
        threads.seen.clear()
        with anyio.fail_after(WAIT):
            verdict = await runtime.enforcer.decide_held_call_on_loop(held, _call())
        assert (verdict.outcome, verdict.code) == (Outcome.ALLOW, "allow")
        assert verdict.event_id in _events(runtime)  # committed before the answer
        if threads.seen == [threading.get_ident()]:  # Cedar ran here, on the loop
            break
    else:
        pytest.fail("no call was decided on the event loop")


async def test_a_cold_view_sends_the_whole_decision_to_a_thread(
        runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    held = _held(runtime, agents, grant)
    runtime.agent_view.forget(SUPPORT)  # the next find reads the store
    threads = Threads(runtime, monkeypatch)
    with anyio.fail_after(WAIT):
        verdict = await runtime.enforcer.decide_held_call_on_loop(held, _call())
    assert verdict.is_allowed
    assert threads.seen and threading.get_ident() not in threads.seen
    with pytest.raises(blocking.WouldBlock), blocking.refusing():  # what sent it there
        runtime.store.fetch("SELECT 1", [])


async def test_a_cancelled_caller_still_waits_and_its_decision_commits_and_is_audited(
        runtime: Runtime, agents: Agents) -> None:
    grant, held = await _started(runtime, agents, max_uses=2)
    gate = Gate(runtime)
    _observed(runtime, gate)
    _warm(runtime, grant)
    verdicts: list[CallVerdict] = []
    cancelled = False
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            async def caller() -> None:
                nonlocal cancelled
                try:
                    verdicts.append(await runtime.enforcer.decide_held_call_on_loop(
                        held, _call(200)))
                    await anyio.lowlevel.checkpoint()  # the cancellation, delivered after
                except anyio.get_cancelled_exc_class():
                    cancelled = True
                    raise
            group.start_soon(caller)
            await anyio.to_thread.run_sync(gate.entered.wait, WAIT)  # the write under way
            group.cancel_scope.cancel()
            gate.release.set()
    _observed(runtime, None)
    assert cancelled
    [verdict] = verdicts
    assert verdict.is_allowed
    event = _events(runtime)[str(verdict.event_id)]
    assert event["decision"]["outcome"] == "allow"
    # its use was counted: the grant's two are spent
    with anyio.fail_after(WAIT):
        after = await runtime.enforcer.decide_held_call_on_loop(held, _call())
    assert (after.outcome, after.code) == (Outcome.DENY, "grant_uses_exhausted")


async def test_a_write_that_fails_is_a_deny_that_says_so_and_counts_no_use(
        runtime: Runtime, agents: Agents) -> None:
    grant, held = await _started(runtime, agents, max_uses=2)
    before = _events(runtime)
    _observed(runtime, Gate(runtime, fail=True))
    _warm(runtime, grant)
    with anyio.fail_after(WAIT):
        failed = await runtime.enforcer.decide_held_call_on_loop(held, _call(300))
    _observed(runtime, None)
    assert (failed.outcome, failed.code) == (Outcome.DENY, "audit_unavailable")
    assert failed.reasons == ("the decision could not be audited, so the call is denied",)
    assert failed.event_id is None and _events(runtime).keys() == before.keys()
    with anyio.fail_after(WAIT):  # the failed call's use was not counted
        assert (await runtime.enforcer.decide_held_call_on_loop(held, _call())).is_allowed
        last = await runtime.enforcer.decide_held_call_on_loop(held, _call())
    assert last.code == "grant_uses_exhausted"


async def test_a_revocation_another_process_committed_is_refused_by_the_loops_write(
        runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    grant, held = await _started(runtime, agents)
    await anyio.to_thread.run_sync(
        lambda: Other(runtime, "revoke", {"grant": grant.accessor}).finish())
    threads = Threads(runtime, monkeypatch)
    _warm(runtime, grant)
    with anyio.fail_after(WAIT):
        verdict = await runtime.enforcer.decide_held_call_on_loop(held, _call())
    # decided on the loop (a held grant's line is confirmed by the write alone), and
    # refused by the write, its refusal the record
    assert threads.seen == [threading.get_ident()]
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_revoked")
    event = _events(runtime)[str(verdict.event_id)]
    assert event["outcome"] == "denied" and event["detail"]["code"] == "grant_revoked"


async def test_twenty_callers_on_one_loop_get_exactly_the_grants_uses(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND, max_uses=5)
    await twenty_callers(runtime, _held(runtime, agents, grant))


async def twenty_callers(runtime: Runtime, held: HeldGrant) -> None:
    """Twenty calls of ``held`` on this loop at once, five uses left: five allowed, the
    rest refused, every answer audited."""
    verdicts: list[CallVerdict] = []

    async def caller() -> None:
        verdicts.append(await runtime.enforcer.decide_held_call_on_loop(held, _call()))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(caller)
    codes = sorted(v.code for v in verdicts)
    assert codes == ["allow"] * 5 + ["grant_uses_exhausted"] * 15
    events = _events(runtime)
    assert all(v.event_id in events for v in verdicts)
