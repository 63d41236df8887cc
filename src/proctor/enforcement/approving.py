"""The enforcer and the human approvals: :meth:`~proctor.enforcement.Enforcer.await_approval`
waits for the decision a pending verdict asks for and decides the call again once it is
approved, with the grant, the agent and the task's data sensitivity read again (they
may have changed while the call waited).
"""

from __future__ import annotations

from dataclasses import replace

import anyio

from proctor import telemetry
from proctor.approvals import ApprovalStatus
from proctor.codes import Code
from proctor.enforcement.calls import _INACTIVE, _Call, log
from proctor.enforcement.steps import _Steps
from proctor.enforcement.verdicts import CallVerdict, ToolCall
from proctor.errors import ProctorError
from proctor.grants.tokens import LEEWAY_SECONDS
from proctor.identity import Agent
from proctor.policy import DecisionRequest, Outcome


class _Approving(_Steps):
    """Waiting for an approval and deciding the approved call."""

    async def await_approval(self, verdict: CallVerdict, *, timeout: float) -> CallVerdict:
        """Wait for the human decision a pending verdict asks for, then decide again.

        Approved: the grant's revocation, expiry and agent are checked again, the approval is used
        (once) and the call decided with ``approved``. Denied or expired: a deny.
        Still pending after ``timeout``: ``approval_timeout``, naming the approval.
        """
        approval = verdict.approval
        if verdict.outcome is not Outcome.APPROVAL_REQUIRED or approval is None:
            return verdict
        telemetry.add_approvals_pending(1)
        try:
            with telemetry.span("proctor.approval.wait",
                                attributes={"proctor.approval.id": approval.id}):
                approval = await self._approvals.wait(approval.id, timeout=timeout)
        finally:
            telemetry.add_approvals_pending(-1)
        if approval.status is ApprovalStatus.PENDING:
            return replace(verdict, code="approval_timeout", approval=approval,
                           reasons=(f"approval `{approval.id}` is still pending",))
        if approval.status is not ApprovalStatus.APPROVED:
            code: Code = "approval_denied" if approval.status is ApprovalStatus.DENIED \
                else "approval_expired"
            return replace(verdict, outcome=Outcome.DENY, code=code, approval=approval,
                           reasons=(f"approval `{approval.id}` is {approval.status.value}",))
        return await anyio.to_thread.run_sync(self._after_approval, verdict)

    def _after_approval(self, verdict: CallVerdict) -> CallVerdict:
        try:
            claims, request = verdict.claims, verdict.request
            if claims is None or request is None:
                return self._refused_after(verdict, "approval_not_applicable",
                                           "the verdict carries no call to approve")
            if self._grants.leases.revoked_now(claims.lineage):
                return self._refused_after(verdict, "grant_revoked",
                                           "the grant was revoked while the call waited")
            if claims.expires_at + LEEWAY_SECONDS <= int(self._clock.now().timestamp()):
                return self._refused_after(verdict, "grant_expired",
                                           "the grant expired while the call waited")
            try:
                agent = self._registry.find(claims.agent_id)
            except ProctorError as exc:  # the store, most likely: as a call's (_ready)
                return self._refused_after(verdict, exc.code, exc.message)
            if agent is None:  # as a call's: not one suspended
                return self._refused_after(verdict, "agent_unknown",
                                           "the grant's agent is not registered")
            if agent.trust_state in _INACTIVE:
                return self._refused_after(verdict, "agent_not_active",
                                           "the agent was suspended or retired while the "
                                           "call waited")
            # the use was counted when the call was first decided: confirmed, not counted
            use = self._grants.confirming(claims)
            use.held = verdict.held  # its events say how the grant was held, as the first

            def fresh() -> tuple[Agent, DecisionRequest] | None:
                now = self._agent_again(claims)
                return None if now is None else (now, self._current(request, claims))
            return self._policy(_Call(claims, verdict.accessor or "",
                                      self._current(request, claims), use,
                                      ToolCall(request.resource.id, {}), agent, fresh))
        except Exception as exc:  # an enforcement point must get an answer
            log.error("decision after approval failed: %s", type(exc).__name__)
            return self._refused_after(verdict, "enforcement_error",
                                       f"the call could not be decided: {type(exc).__name__}")

    # the steps
