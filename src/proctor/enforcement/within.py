"""Answers within a call: :meth:`~proctor.enforcement.Enforcer.decide_within` decides
what an agent answers an upstream's request during a call that was allowed (sampling,
elicitation), on that call's grant: no new proof, no use counted, everything else as
for any call.
"""

from __future__ import annotations

from proctor.enforcement.calls import _INACTIVE, _Call, _unreadable, log
from proctor.enforcement.steps import _Steps
from proctor.enforcement.verdicts import CallVerdict, ToolCall
from proctor.errors import ProctorError
from proctor.grants.tokens import LEEWAY_SECONDS
from proctor.identity import Agent
from proctor.policy import DecisionRequest


class _Within(_Steps):
    """Deciding a call as part of one already allowed."""

    def decide_within(self, verdict: CallVerdict, call: ToolCall) -> CallVerdict:
        """Decide ``call`` as part of the call ``verdict`` allowed, on its grant (the
        agent's answer to an upstream's request during that call): no new proof (the
        answer comes on the call's own session; the call's proof was checked), no use
        counted; the grant's scope, expiry, revocation (in the write), the agent, Cedar
        with the full context and the audit write as for any call. Never raises."""
        claims = verdict.claims
        if not verdict.is_allowed or claims is None:
            return self._refused(call, "enforcement_error", "the call this belongs to was "
                                 "not allowed", claims=claims, held=verdict.held)
        unreadable = _unreadable(call.tool_id, call.args)
        if unreadable is not None:  # as a call's (_prepared): nothing to audit or digest
            return self._refused(ToolCall(call.tool_id, {}, call.method, call.target,
                                          call.source_ip), "arguments_invalid", unreadable,
                                 claims=claims, held=verdict.held)
        try:
            if claims.expires_at + LEEWAY_SECONDS <= int(self._clock.now().timestamp()):
                return self._refused(call, "grant_expired", "the grant expired during the "
                                     "call", claims=claims, held=verdict.held)
            try:
                use = self._grants.prepare_within(claims, tool_id=call.tool_id,
                                                  args=call.args)
            except ProctorError as exc:
                return self._refused(call, exc.code, exc.message, claims=claims,
                                     held=verdict.held)
            use.held = verdict.held
            # from memory while the change feed is current (the write confirms both)
            agent = (self._agent_view or self._registry).find(claims.agent_id)
            if agent is None or agent.trust_state in _INACTIVE:
                return self._refused(call, "agent_not_active", "the agent may no longer "
                                     "act", claims=claims, held=verdict.held)
            self._refresh(agent)
            if self._tools is not None and self._engine.catalog.by_action(
                    f"tool:{call.tool_id}") is None:
                self._tools.teach(self._engine)
            tasks = self._task_view or self._grants
            request = self._request(agent, tasks.task(claims.task_id), claims, call)

            def fresh() -> tuple[Agent, DecisionRequest] | None:
                now = self._agent_again(claims)
                return None if now is None else (now, self._request(
                    now, self._grants.task(claims.task_id), claims, call))
            return self._policy(_Call(claims, verdict.accessor or "", request, use, call,
                                      agent, fresh))
        except Exception as exc:  # an enforcement point must get an answer
            log.error("decision on `%s` failed: %s", call.tool_id[:200], type(exc).__name__)
            return self._refused(call, "enforcement_error", "the answer could not be "
                                 f"decided: {type(exc).__name__}", claims=claims,
                                 held=verdict.held)
