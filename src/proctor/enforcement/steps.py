"""The steps of one decision, in order (:mod:`proctor.enforcement`): the grant and the
call read, the agent and the task, policy (and an approval it may spend), the one write
and what its answer is; every entry of the enforcer (the synchronous ones, those on the
event loop, the answers within a call, a call after its approval) goes through these.
"""

from __future__ import annotations

from dataclasses import replace

from proctor.approvals import Approval, binding_digest
from proctor.audit import AuditEvent, decision_event
from proctor.audit.masking import mask
from proctor.audit.writer import WITHDRAWN, RecordedEvent
from proctor.enforcement.calls import (
    _FINAL_FOR_CALL,
    _INACTIVE,
    _LAPSED,
    _NAMED_MOST,
    _STALE,
    _approved,
    _Call,
    _code,
    _Pending,
    _Presented,
    _printable,
    _Spent,
    _unreadable,
    log,
)
from proctor.enforcement.state import _Enforcing
from proctor.enforcement.verdicts import CALL_METHODS, HELD_IN_PROCESS, CallVerdict, ToolCall
from proctor.errors import GrantError, ProctorError
from proctor.grants import GrantClaims, GrantUse, HeldGrant
from proctor.grants.accounting import ProofSpent
from proctor.grants.authority import Task
from proctor.identity import Agent
from proctor.policy import Decision, DecisionRequest, EntityRef, Outcome
from proctor.policy.catalog import Sensitivity
from proctor.policy.context import call_context


class _Steps(_Enforcing):
    """The steps before policy, policy, the write and its answer."""

    def _decide_or_refuse(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        try:
            with self._one_look():
                return self._decide(grant, call)
        except Exception as exc:  # an enforcement point must get an answer
            return self._failed(grant, call, exc)

    def _failed(self, grant: _Presented | HeldGrant, call: ToolCall,
                exc: Exception) -> CallVerdict:
        log.error("decision on `%s` failed: %s", str(call.tool_id)[:200], type(exc).__name__)
        return self._refused(call, "enforcement_error",
                             f"the call could not be decided: {type(exc).__name__}",
                             held=isinstance(grant, HeldGrant))

    def _decide(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        prepared = self._prepared(grant, call)
        if isinstance(prepared, CallVerdict):
            return prepared
        return self._policy(prepared)

    def _prepared(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict | _Call:
        """The steps before policy: a refusal (written), or the call ready for policy."""
        held = isinstance(grant, HeldGrant)
        unreadable = self._unreadable_refused(call, held=held)
        if unreadable is not None:
            return unreadable
        try:
            if isinstance(grant, HeldGrant):
                use = self._grants.prepare_held(grant, tool_id=call.tool_id, args=call.args)
            else:
                if call.method not in CALL_METHODS:  # a proof the call's caller chose
                    raise GrantError("proof_wrong_target", f"`{str(call.method)[:64]}` is not "
                                     "a call's method: a proof for it is not a call's proof")
                use = self._grants.prepare(grant.token, grant.proof, method=call.method,
                                           target=call.target, tool_id=call.tool_id,
                                           args=call.args)
            accessor = self._grants.accessor_of(use.claims.grant_id)
        except ProctorError as exc:
            holder, spent = getattr(exc, "holder", None), getattr(exc, "spent", None)
            return self._refused(call, exc.code, exc.message, held=held,
                                 claims=holder if isinstance(holder, GrantClaims) else None,
                                 spent=spent if isinstance(spent, ProofSpent) else None)
        return self._ready(call, use, accessor)

    def _unreadable_refused(self, call: ToolCall, *, held: bool,
                            claims: GrantClaims | None = None) -> CallVerdict | None:
        """The refusal (written) of a call that cannot be decided as it is
        (:func:`~proctor.enforcement.calls._unreadable`), or None. A lone surrogate
        (``"\\ud800"`` is valid JSON): no UTF-8 to audit or digest, so the event names
        the tool escaped and holds no arguments; nesting past the cap (or arguments that
        contain themselves, from a caller in this process): nothing could walk them
        without running out of stack."""
        unreadable = _unreadable(call.tool_id, call.args)
        if unreadable is None:
            return None
        tool_id = call.tool_id if isinstance(call.tool_id, str) else repr(call.tool_id)
        return self._refused(ToolCall(_printable(tool_id), {}, call.method, call.target,
                                      call.source_ip), "arguments_invalid", unreadable,
                             claims=claims, held=held)

    def _ready(self, call: ToolCall, use: GrantUse, accessor: str) -> CallVerdict | _Call:
        """The steps between the grant's checks and policy, for every call on a grant
        (:meth:`_prepared`, and an answer within a call: ``decide_within``): the agent
        and the task from memory while the change feed is current, else from the store
        (the write confirms both); an agent not registered (``agent_unknown``) or
        suspended or retired (``agent_not_active``) refused, written; the engine given
        any tool another process discovered; the request built, with how to build it
        again on what is committed (``fresh``). Policy decides on the agent as read
        here (:meth:`_until_write`: the engine puts it if it holds another version),
        not on whatever the engine holds for it by then."""
        claims, held = use.claims, use.held
        try:
            agent = (self._agent_view or self._registry).find(claims.agent_id)
            task = (self._task_view or self._grants).task(claims.task_id)
        except ProctorError as exc:  # the store, most likely: the grant's holder is known
            return self._refused(call, exc.code, exc.message, claims=claims, held=held,
                                 spent=_spent(use))
        if agent is None:
            return self._refused(call, "agent_unknown", "the grant's agent is not registered",
                                 claims=claims, held=held, spent=_spent(use))
        if agent.trust_state in _INACTIVE:
            return self._refused(call, "agent_not_active",
                                 f"agent is {agent.trust_state.value}", claims=claims,
                                 held=held, spent=_spent(use))
        if self._tools is not None and self._engine.catalog.by_action(
                f"tool:{call.tool_id}") is None:
            self._tools.teach(self._engine)  # discovered by another process, perhaps
        request = self._request(agent, task, claims, call, use.constrained)

        def fresh() -> tuple[Agent, DecisionRequest] | None:
            now = self._agent_again(claims)
            return None if now is None else (now, self._request(
                now, (self._task_view or self._grants).task(claims.task_id), claims, call,
                use.constrained))
        return _Call(claims, accessor, request, use, call, agent, fresh)

    def _agent_again(self, claims: GrantClaims) -> Agent | None:
        """The grant's agent as committed now, after this process's copies of it and of
        the task are dropped (None: it may not act)."""
        if self._agent_view is not None:
            self._agent_view.forget(claims.agent_id)
        if self._task_view is not None:
            self._task_view.forget(claims.task_id)
        agent = self._registry.find(claims.agent_id)
        if agent is None or agent.trust_state in _INACTIVE:
            return None
        return agent

    def _policy(self, call: _Call) -> CallVerdict:
        """:meth:`_decided`; an approval it spent (its decision once more keeps the first
        one's) is given back unless the call is allowed or refused for good
        (:data:`_FINAL_FOR_CALL`): a human approved this exact call, not its refusal."""
        verdict, spent = self._decided(call, approved=None, spent=None)
        if self._gives_back(verdict, spent):
            self._give_back(verdict, spent)
        return verdict

    @staticmethod
    def _gives_back(verdict: CallVerdict, spent: _Spent | None) -> bool:
        return spent is not None and not verdict.is_allowed \
            and verdict.code not in _FINAL_FOR_CALL

    def _give_back(self, verdict: CallVerdict, spent: _Spent | None) -> None:
        if spent is None:
            return
        try:
            self._approvals.give_back(*spent)
        except Exception as exc:  # spent it stays: the safe side
            log.error("approval `%s` could not be given back: %s", spent[0].id,
                      type(exc).__name__)

    def _decided(self, call: _Call, *, approved: Approval | None, spent: _Spent | None,
                 again: GrantError | None = None) -> tuple[CallVerdict, _Spent | None]:
        """Policy, then the write (:meth:`_until_write`, the write, :meth:`_written`)."""
        pending = self._until_write(call, approved=approved, spent=spent, again=again)
        try:
            recorded = self._audit.record_with(pending.event, pending.call.use)
        except Exception as exc:  # the use was not counted either: never an allow
            return self._unaudited(pending, exc), pending.spent
        return self._written(pending, recorded)

    def _until_write(self, call: _Call, *, approved: Approval | None, spent: _Spent | None,
                     again: GrantError | None = None) -> _Pending:
        """Policy, and the event and effects of the write that stands behind it (not
        written yet). ``approved``: decided again with the approval the first decision
        used; ``again``: why (the first one's write refused it)."""
        claims, request, use, agent = call.claims, call.request, call.use, call.agent
        use.sensitivity = 0
        use.decided_state = use.decided_risk = use.decided_seen = None
        use.decided_revision = use.pinned = None
        if approved is None:  # else decided again on the pre-approval it spent, if any
            use.also_live = ()
        approval: Approval | None = approved
        if approved is not None:
            request = _approved(request)
        # on the agent as read and checked, which the write confirms: never the entry
        # another thread put in the engine meanwhile (the feed's, another decision's)
        entity = self._entry(agent)
        decision = self._engine.decide(request, agent=entity)
        if decision.outcome is Outcome.APPROVAL_REQUIRED and approved is None:
            approval = self._approvals.consume(self._binding(claims, request))
            if approval is not None:
                spent = (approval, None)
            else:  # "approve similar within this task"
                similar = self._approvals.consume_similar(
                    agent_id=claims.agent_id, task_id=claims.task_id,
                    tool_id=request.resource.id, args=request.context.get("args") or {},
                    line=claims.actor_chain[::-1])
                if similar is not None:
                    # the write confirms unrevoked, as the grant's line, the pre-approval
                    # and the line of the grant of the call it approved
                    approval, use.also_live = similar[0], similar[2]
                    spent = (similar[0], similar[1])
            if approval is not None:
                request = _approved(request)
                decision = self._engine.decide(request, agent=entity)
        event = decision_event(request, decision, now=self._clock.now(), grant=call.accessor,
                               holder=HELD_IN_PROCESS if use.held else None,
                               decided_again=None if again is None
                               else (again.code, again.message))
        fresh = call.fresh
        if decision.outcome is Outcome.ALLOW:
            use.sensitivity = self._sensitivity(request)
            # the write confirms what this allow was decided on: a drift, a risk score or
            # a task's sensitive read another process committed before its news reached
            # this one is never allowed (agent_changed, task_changed)
            use.decided_state = agent.trust_state.value
            if call.call.pinned is not None:  # the definition in hand, against the committed pin
                use.pinned = (call.call.tool_id, call.call.pinned)
            if fresh is not None:  # else decided on both read from the store just now
                use.decided_risk = (agent.risk_score, agent.risk_factors)
                use.decided_seen = int(request.context.get("sensitivity_seen", 0))
                if self._sync_policies is not None:
                    use.decided_revision = decision.revision

        def refuse(exc: GrantError) -> AuditEvent:
            if exc.code in _STALE and fresh is not None:
                return WITHDRAWN  # decided once more: that decision's event is the record
            named = None if exc.code == "proof_replayed" else claims  # may be anyone's
            return self._refusal_event(call.call, exc.code, exc.message, named,
                                       held=use.held)

        use.refuse = refuse
        if request is not call.request:  # decided with ``approved``
            call = replace(call, request=request)
        return _Pending(call, decision, event, approval, spent)

    def _unaudited(self, pending: _Pending, exc: Exception) -> CallVerdict:
        """The deny of a decision whose write failed."""
        request = pending.call.request
        log.error("call on `%s` denied: its write failed (%s)", request.action,
                  type(exc).__name__)
        return CallVerdict(Outcome.DENY, "audit_unavailable",
                           ("the decision could not be audited, so the call is denied",),
                           revision=pending.decision.revision, claims=pending.call.claims,
                           accessor=pending.call.accessor, request=request)

    def _written(self, pending: _Pending, recorded: RecordedEvent | None
                 ) -> tuple[CallVerdict, _Spent | None]:
        """The verdict once the write committed. An allow the write refuses because it was
        decided on an agent or a task another process had changed meanwhile
        (``agent_changed``, ``task_changed``) is decided once more, on both read from the
        store then (``fresh``), with the approval the first decision used, if any. That
        second write confirms no risk nor sensitivity: whatever committed before it was
        read is in it, and a change committing meanwhile is concurrent with the call, not
        news this node missed. The first decision's write then writes no event (it was
        never the answer): the second one's says it was decided again, and why
        (``detail.decided_again``); if the call cannot be decided again (its agent
        may no longer act), the refusal is written then.

        Reads or writes the store only where :meth:`_Pending.settles_in_memory` says so."""
        call, decision, approval, spent = (pending.call, pending.decision, pending.approval,
                                           pending.spent)
        claims, use = call.claims, call.use
        event_id = recorded.event_id if recorded is not None else None
        if use.raised and self._task_view is not None:
            # before the answer: the next call of the task, here, reads the new mark (on
            # PostgreSQL the feed's notice of this very write may still be on its way)
            self._task_view.forget(claims.task_id)
        refusal = use.refusal
        if refusal is not None and refusal.code in _STALE and call.fresh is not None:
            if refusal.code == "policy_changed" and self._sync_policies is not None:
                self._sync_policies()
            current = call.fresh()
            if current is not None:  # decided once more on what is committed now
                return self._decided(replace(call, request=current[1], agent=current[0],
                                             fresh=None),
                                     approved=approval, spent=spent, again=refusal)
            refused = self._refused(call.call, refusal.code, refusal.message, claims=claims,
                                    held=use.held)  # its write wrote no event
            return refused, spent
        if refusal is not None:
            if refusal.code in _LAPSED:
                self._grants.end_lapsed(claims.task_id, refusal.message)
            return CallVerdict(Outcome.DENY, refusal.code, (refusal.message,),
                               event_id=event_id,
                               claims=None if refusal.code == "proof_replayed" else claims
                               ), spent
        if decision.outcome is Outcome.APPROVAL_REQUIRED:
            approval = self._ask(claims, call.accessor, call.request, decision,
                                 pending.event.id)
        return CallVerdict(decision.outcome, _code(decision), decision.reasons,
                           decision.policy_ids, decision.revision, event_id, claims,
                           call.accessor, approval, call.request, held=use.held), spent

    def _request(self, agent: Agent, task: Task, claims: GrantClaims, call: ToolCall,
                 constrained: frozenset[str]) -> DecisionRequest:
        """The call's request to policy; ``constrained``: the arguments the grant's scope
        constrains for it, as its check found them (:meth:`GrantScope.constrained`)."""
        context = call_context(
            now=self._clock.now(), args=call.args, task=task.id, purpose=task.purpose,
            on_behalf_of=task.on_behalf_of, delegation_chain=claims.actor_chain[::-1],
            source_ip=call.source_ip, sensitivity_seen=Sensitivity(task.sensitivity_seen),
            grant_constrained=constrained)
        principal, action, resource = self._names(agent.id, call.tool_id)
        return DecisionRequest(principal, action, resource, context)

    def _names(self, agent_id: str, tool_id: str) -> tuple[EntityRef, str, EntityRef]:
        """A request's principal, action and resource for this agent and tool, made once
        (values: the same agent calls the same tools call after call)."""
        key = (agent_id, tool_id)
        names = self._named.get(key)
        if names is None:
            if len(self._named) >= _NAMED_MOST:
                self._named.clear()
            names = self._named[key] = (EntityRef("Agent", agent_id), f"tool:{tool_id}",
                                        EntityRef("Tool", tool_id))
        return names

    def _current(self, request: DecisionRequest, claims: GrantClaims) -> DecisionRequest:
        """``request`` with the time and the task's data sensitivity as they are now
        (the task may have read more while the call waited)."""
        task = self._grants.task(claims.task_id)
        fresh = call_context(now=self._clock.now(),
                             sensitivity_seen=Sensitivity(task.sensitivity_seen))
        context = {**request.context, "time": fresh["time"],
                   "sensitivity_seen": fresh["sensitivity_seen"]}
        return DecisionRequest(request.principal, request.action, request.resource, context)

    def _ask(self, claims: GrantClaims, accessor: str, request: DecisionRequest,
             decision: Decision, event_id: str) -> Approval:
        agent = self._registry.find(claims.agent_id)
        tool_id = request.resource.id
        shown = {
            "event_id": event_id, "tool": tool_id, "args": mask(request.context.get("args")),
            "reasons": list(decision.reasons), "policy_ids": list(decision.policy_ids),
            "purpose": request.context.get("purpose", ""),
            "delegation_chain": list(claims.actor_chain[::-1]),
            "trust_state": agent.trust_state.value if agent else "unknown",
            "risk_score": agent.risk_score if agent else None,
            "sensitivity_seen": request.context.get("sensitivity_seen", 0),
        }
        return self._approvals.request(
            agent_id=claims.agent_id, task_id=claims.task_id, tool_id=tool_id,
            args=request.context.get("args") or {}, grant_id=claims.grant_id,
            accessor=accessor, on_behalf_of=str(request.context.get("on_behalf_of", "")),
            shown=shown)

    def _binding(self, claims: GrantClaims, request: DecisionRequest) -> str:
        return binding_digest(agent_id=claims.agent_id, task_id=claims.task_id,
                              tool_id=request.resource.id,
                              args=request.context.get("args") or {}, grant_id=claims.grant_id)

    def _sensitivity(self, request: DecisionRequest) -> int:
        """The data label rank an allowed call reads, for its task's mark."""
        tool = self._engine.catalog.by_action(request.action)
        return int(tool.sensitivity) if tool is not None else 0


def _spent(use: GrantUse) -> ProofSpent | None:
    """The claim of ``use``'s proof nonce, for a refusal written without the use (its
    proof verified: spent whatever the answer); None for a use with no proof."""
    if use.nonce is None or use.nonce_until is None:
        return None
    return ProofSpent(use.nonce, use.nonce_until)
