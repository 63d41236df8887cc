"""The enforcer's entries for asyncio code:
:meth:`~proctor.enforcement.Enforcer.decide_call_on_loop` and
:meth:`~proctor.enforcement.Enforcer.decide_held_call_on_loop` run a decision's CPU on
the caller's event loop and await its write, and send to a worker thread only what would
wait for the database. Kept apart from the steps they run: their concern is where each
part of a decision runs, not what it decides.
"""

from __future__ import annotations

import anyio

from proctor import telemetry
from proctor.enforcement.calls import _decision_span, _Presented, _traced
from proctor.enforcement.steps import _Steps
from proctor.enforcement.verdicts import CallVerdict, ToolCall
from proctor.grants import HeldGrant
from proctor.store import blocking


class _OnLoop(_Steps):
    """Deciding on the event loop, the write awaited."""

    async def decide_call_on_loop(self, token: str, proof: str, call: ToolCall) -> CallVerdict:
        """:meth:`decide_call` for asyncio code (under anyio), without a thread hop
        when the in-process views are warm.

        The decision's CPU (the grant, the proof, the agent and task from the views,
        Cedar, the event) runs on the caller's event loop; its one write is queued to
        the audit writer's thread, which answers an asyncio future when the batch
        committed (:meth:`AuditLog.record_with_async`): the loop never waits for the
        database. Everything :meth:`decide_call` guarantees holds: the answer waits for
        the commit, the write confirms revocations, suspensions and what the allow was
        decided on, a stale allow is decided once more, an approval it spent is given
        back, a failed write is ``audit_unavailable``; nothing raises.

        What would wait for the database runs on a worker thread instead, as
        :meth:`decide_call_async` does (:mod:`proctor.store.blocking`): the whole
        decision when its part before the write needs the store (a view that is cold
        or cannot prove itself current, a refusal's own write, an approval looked up,
        a tool learnt from another process), and the part after the write when it
        needs the store (a stale allow decided once more, a lapsed task ended, an
        approval asked for or given back). On SQLite the views' one look at the change
        feed is a statement on the loop (an index seek; the changes it finds are read
        there too).

        The whole decision is shielded from cancellation: a cancelled caller still
        waits for it, so its write (use, nonce, event) commits and its after-write
        steps run; the cancellation is delivered after. With telemetry on, the
        decision's span is the calling task's child.
        """
        return await self._decide_shielded(_Presented(token, proof), call)

    async def decide_held_call_on_loop(self, held: HeldGrant, call: ToolCall) -> CallVerdict:
        """:meth:`decide_held_call` as :meth:`decide_call_on_loop` decides
        :meth:`decide_call`: the stdio wrapper's entry."""
        return await self._decide_shielded(held, call)

    async def _decide_shielded(self, grant: _Presented | HeldGrant,
                               call: ToolCall) -> CallVerdict:
        with anyio.CancelScope(shield=True):
            if not telemetry.is_enabled():
                verdict = await self._decide_on_loop(grant, call)
            else:
                started = self._clock.monotonic()
                with _decision_span(call) as current:
                    verdict = await self._decide_on_loop(grant, call)
                    _traced(current, verdict)
                telemetry.record_decision(verdict.outcome.value, verdict.code,
                                          self._clock.monotonic() - started)
        return verdict

    async def _decide_on_thread(self, grant: _Presented | HeldGrant,
                                call: ToolCall) -> CallVerdict:
        self.decided_on_thread += 1
        return await anyio.to_thread.run_sync(self._decide_or_refuse, grant, call)

    async def _decide_on_loop(self, grant: _Presented | HeldGrant,
                              call: ToolCall) -> CallVerdict:
        """The decision's CPU on the loop, its write awaited (see
        :meth:`decide_call_on_loop`)."""
        if self._agent_view is None or self._task_view is None:  # every read the store's
            return await self._decide_on_thread(grant, call)
        try:
            with self._one_look():
                self._agent_view.is_current()  # changes heard outside the refusal
                with blocking.refusing():
                    prepared = self._prepared(grant, call)
                    if isinstance(prepared, CallVerdict):  # written without the store?
                        return prepared
                    pending = self._until_write(prepared, approved=None, spent=None)
        except blocking.WouldBlock:  # nothing written: the whole decision on a thread
            return await self._decide_on_thread(grant, call)
        except Exception:  # decided again where a failure's refusal can be written
            return await self._decide_on_thread(grant, call)
        self.decided_on_loop += 1
        try:
            try:
                recorded = await self._audit.record_with_async(pending.event, pending.call.use)
            except Exception as exc:  # the use was not counted either: never an allow
                verdict, spent = self._unaudited(pending, exc), pending.spent
            else:
                if pending.settles_in_memory():
                    verdict, spent = self._written(pending, recorded)
                else:
                    verdict, spent = await anyio.to_thread.run_sync(
                        self._written, pending, recorded)
            if self._gives_back(verdict, spent):
                await anyio.to_thread.run_sync(self._give_back, verdict, spent)
            return verdict
        except Exception as exc:  # an enforcement point must get an answer
            return await anyio.to_thread.run_sync(self._failed, grant, call, exc)
