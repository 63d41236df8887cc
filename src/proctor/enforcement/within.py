"""Answers within a call: :meth:`~proctor.enforcement.Enforcer.decide_within` decides
what an agent answers an upstream's request during a call that was allowed (sampling,
elicitation), on that call's grant: no new proof, no use counted, everything else as
for any call.
"""

from __future__ import annotations

from proctor.enforcement.calls import log
from proctor.enforcement.steps import _Steps
from proctor.enforcement.verdicts import CallVerdict, ToolCall
from proctor.errors import ProctorError
from proctor.grants.tokens import LEEWAY_SECONDS


class _Within(_Steps):
    """Deciding a call as part of one already allowed."""

    def decide_within(self, verdict: CallVerdict, call: ToolCall) -> CallVerdict:
        """Decide ``call`` as part of the call ``verdict`` allowed, on its grant (the
        agent's answer to an upstream's request during that call): no new proof (the
        answer comes on the call's own session; the call's proof was checked), no use
        counted; the grant's scope, expiry, revocation (in the write), the agent, the
        task, Cedar with the full context and the audit write as for any call
        (the steps after the grant's own checks are a call's: :meth:`_Steps._ready`).
        Never raises."""
        claims = verdict.claims
        if not verdict.is_allowed or claims is None:
            return self._refused(call, "enforcement_error", "the call this belongs to was "
                                 "not allowed", claims=claims, held=verdict.held)
        try:
            unreadable = self._unreadable_refused(call, held=verdict.held, claims=claims)
            if unreadable is not None:  # as a call's: nothing to audit or digest
                return unreadable
            if claims.expires_at + LEEWAY_SECONDS <= int(self._clock.now().timestamp()):
                return self._refused(call, "grant_expired", "the grant expired during the "
                                     "call", claims=claims, held=verdict.held)
            with self._one_look():
                try:
                    use = self._grants.prepare_within(claims, tool_id=call.tool_id,
                                                      args=call.args)
                except ProctorError as exc:
                    return self._refused(call, exc.code, exc.message, claims=claims,
                                         held=verdict.held)
                use.held = verdict.held
                ready = self._ready(call, use, verdict.accessor or "")
                if isinstance(ready, CallVerdict):
                    return ready
                return self._policy(ready)
        except Exception as exc:  # an enforcement point must get an answer
            log.error("decision on `%s` failed: %s", str(call.tool_id)[:200],
                      type(exc).__name__)
            return self._refused(call, "enforcement_error", "the answer could not be "
                                 f"decided: {type(exc).__name__}", claims=claims,
                                 held=verdict.held)
