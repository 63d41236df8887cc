""":class:`Enforcer`, the one object enforcement points decide through: its synchronous
entries (:meth:`~Enforcer.decide_call`, :meth:`~Enforcer.decide_held_call`, and their
worker-thread forms) here, together with the event-loop entries (:mod:`.on_loop`), the
answers within a call (:mod:`.within`) and the approvals (:mod:`.approving`) it is made of.
"""

from __future__ import annotations

import anyio

from proctor import telemetry
from proctor.enforcement.approving import _Approving
from proctor.enforcement.calls import _decision_span, _Presented, _traced
from proctor.enforcement.on_loop import _OnLoop
from proctor.enforcement.verdicts import CallVerdict, ToolCall
from proctor.enforcement.within import _Within
from proctor.grants import HeldGrant


class Enforcer(_OnLoop, _Within, _Approving):
    """Decides tool calls: grant, agent, policy, approval, audit — fail-closed."""

    def decide_call(self, token: str, proof: str, call: ToolCall) -> CallVerdict:
        """Decide one call; never raises."""
        return self._decide_safely(_Presented(token, proof), call)

    def decide_held_call(self, held: HeldGrant, call: ToolCall) -> CallVerdict:
        """Decide one call of the process that holds the grant's key itself (the stdio
        wrapper: :meth:`GrantAuthority.hold` checked the key once), without a proof:
        no signature made nor verified, no nonce stored; everything else as
        :meth:`decide_call`, and the audit event says the grant was held in process
        (``detail.holder``). Never raises."""
        return self._decide_safely(held, call)

    def _decide_safely(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        if telemetry.is_enabled():
            return self._decide_traced(grant, call)
        return self._decide_or_refuse(grant, call)

    def _decide_traced(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        """:meth:`decide_call` in a span, counted: names, codes and ids only."""
        started = self._clock.monotonic()
        with _decision_span(call) as current:
            verdict = self._decide_or_refuse(grant, call)
            _traced(current, verdict)
        telemetry.record_decision(verdict.outcome.value, verdict.code,
                                  self._clock.monotonic() - started)
        return verdict

    async def decide_call_async(self, token: str, proof: str, call: ToolCall) -> CallVerdict:
        """:meth:`decide_call` off the event loop, in a worker thread (it reads and
        writes the store). :meth:`decide_call_on_loop` costs less."""
        return await anyio.to_thread.run_sync(self.decide_call, token, proof, call)

    async def decide_held_call_async(self, held: HeldGrant, call: ToolCall) -> CallVerdict:
        """:meth:`decide_held_call` off the event loop, in a worker thread."""
        return await anyio.to_thread.run_sync(self.decide_held_call, held, call)
