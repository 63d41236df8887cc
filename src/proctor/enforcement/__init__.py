"""Deciding one tool call: the enforcement points' single decision path.

The gateway (MCP), ``POST /v1/decide`` and any other enforcement point call
:meth:`Enforcer.decide_call`, which takes the steps of shared/DESIGN.md in order:

1. the grant: signature, issuer, audience, time, proof of possession (made for
   the call's own method, one of :data:`CALL_METHODS`: never a listing's, an
   answer's nor a grant exchange's), the call inside the grant's scope — else a
   deny with the ``grant_*``/``proof_*`` code
   (:meth:`Enforcer.decide_held_call`, for the process that holds the grant's key
   itself, takes no proof: the key was checked once, by
   :meth:`~proctor.grants.GrantAuthority.hold`);
2. the agent as the registry says now: unknown, suspended or retired — deny;
   a changed trust state or risk score is pushed to the policy engine first;
3. Cedar, with the tool's own action and the full context: arguments, task,
   purpose, owner, delegation chain, source, data sensitivity seen so far in
   the task, the arguments the grant constrains; ``approval_required`` looks
   for an approved, unused approval bound to this exact call and, if one is
   there, uses it and decides again with ``approved``; otherwise a pending
   approval request is created;
4. one write, the audit writer's transaction shared with the other decisions
   waiting (group commit; :mod:`proctor.grants.use`): the grant, its ancestors
   and its task not revoked, the agent active (and, for an allow, in the trust
   state and with the risk the decision saw: else ``agent_changed``), the task
   open (and, for an allow, its data sensitivity seen no higher than the decision
   saw: else ``task_changed``) — as committed
   now, in any process — the proof's nonce new, a use left; the event, the
   use, the nonce and the task's activity and data sensitivity are written
   together. A check that fails there turns the decision into that check's
   deny (its event written instead); if the write fails, the answer is a deny
   (``audit_unavailable``), whatever ``fail_open`` says: a use that was not
   counted cannot be allowed. The answer waits for the commit.

Nothing here raises: every failure is a deny that says why.

The package's modules: :mod:`.verdicts` (the call and its answer), :mod:`.enforcer`
(:class:`Enforcer` and its synchronous entries), :mod:`.on_loop` (the event-loop
entries), :mod:`.within` (answers within a call), :mod:`.approving` (approvals),
:mod:`.steps` (the steps every entry takes), :mod:`.state` (the parts, the engine's
agents kept current, refusals before policy) and :mod:`.calls` (the values the steps
pass along, and their helpers).
"""

from proctor.enforcement.enforcer import Enforcer
from proctor.enforcement.verdicts import (
    CALL_METHODS,
    HELD_IN_PROCESS,
    CallMethod,
    CallVerdict,
    ToolCall,
    VerdictCode,
)

__all__ = ["CALL_METHODS", "HELD_IN_PROCESS", "CallMethod", "CallVerdict", "Enforcer", "ToolCall",
           "VerdictCode"]
