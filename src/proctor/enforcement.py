"""Deciding one tool call: the enforcement points' single decision path.

The gateway (MCP), ``POST /v1/decide`` and any other enforcement point call
:meth:`Enforcer.decide_call`, which takes the steps of shared/DESIGN.md in order:

1. the grant: signature, issuer, audience, time, proof of possession, the call
   inside the grant's scope — else a deny with the ``grant_*``/``proof_*`` code
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
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import anyio

from proctor import telemetry
from proctor.approvals import Approval, ApprovalQueue, ApprovalStatus, binding_digest
from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, decision_event, new_event_id
from proctor.audit.masking import mask
from proctor.audit.writer import WITHDRAWN, RecordedEvent
from proctor.clock import Clock
from proctor.codes import Code
from proctor.documents import MAX_DEPTH, is_unicode_text
from proctor.errors import GrantError, ProctorError
from proctor.grants import GrantAuthority, GrantClaims, GrantScope, GrantUse, HeldGrant
from proctor.grants.authority import Task
from proctor.grants.issuance import DecidedOn
from proctor.grants.tokens import LEEWAY_SECONDS
from proctor.grants.view import TaskView
from proctor.identity import Agent, AgentRegistry, AgentView, agent_entity_of, sync_principals
from proctor.identity.agent import TrustState
from proctor.policy import Decision, DecisionRequest, EntityRef, Outcome, PolicyEngine
from proctor.policy.catalog import Sensitivity
from proctor.policy.context import call_context
from proctor.policy.known_tools import KnownTools
from proctor.store import blocking

__all__ = ["HELD_IN_PROCESS", "CallVerdict", "Enforcer", "ToolCall", "VerdictCode"]

# A verdict's code: `allow`, or the code of the deny (or of the pending approval).
VerdictCode = Literal["allow"] | Code

log = logging.getLogger(__name__)

# ``detail.holder`` of the events of calls decided for the process holding the grant's key
HELD_IN_PROCESS = "in_process"

_INACTIVE = (TrustState.SUSPENDED, TrustState.RETIRED)
_LAPSED = ("task_expired", "task_idle")  # refusals after which the write's caller ends the task
_NAMED_MOST = 4096  # (agent, tool) pairs whose request names are kept
# an allow decided on what another process had changed meanwhile: decided once more
_STALE = ("agent_changed", "task_changed", "policy_changed")
# refusals after which no call of the same binding (agent, task, tool, arguments, grant)
# can ever be allowed: the approval it spent stays spent. After any other refusal (a
# replayed proof, a stale allow decided again and denied, a failed write, no use left
# while the call that asked, its use counted, still waits for it) it is given back
_FINAL_FOR_CALL = frozenset({
    "grant_revoked", "grant_expired", "grant_unknown", "grant_wrong_agent",
    "grant_manifest_changed", "agent_unknown", "agent_not_active", "task_unknown",
    "task_ended", "task_expired", "task_idle"})

Fresh = Callable[[], "tuple[Agent, DecisionRequest] | None"]
"""The grant's agent and the call's request again, as committed (None: the agent may
no longer act)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call an agent asks to make. ``method`` and ``target`` are what its proof
    must be signed over (the proof's ``htm`` and ``htu``). ``pinned``: the tool is
    pinned (a gateway's ``pin: strict``), and this is the digest of its definition as
    the caller listed it (what the call is made against); an allow's write confirms it
    is the reviewed digest as committed (``tool_changed``, ``tool_unreviewed``)."""

    tool_id: str
    args: Mapping[str, Any]
    method: str = "tools/call"
    target: str = ""
    source_ip: str | None = None
    pinned: str | None = None


@dataclass(frozen=True, slots=True)
class CallVerdict:
    """The answer for one call. ``code`` is stable for machines: ``allow``, a grant
    check's code (``grant_revoked``, ``proof_replayed``, …), a policy reason code
    (``policy_forbid``, ``no_matching_permit``, ``approval_required``, …),
    ``approval_denied``, ``approval_timeout``, ``audit_unavailable``."""

    outcome: Outcome
    code: VerdictCode
    reasons: tuple[str, ...]
    policy_ids: tuple[str, ...] = ()
    revision: int | None = None
    event_id: str | None = None
    claims: GrantClaims | None = None
    accessor: str | None = None
    approval: Approval | None = None
    request: DecisionRequest | None = None
    held: bool = False  # decided on a grant this process holds (decide_held_call)

    @property
    def is_allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def as_json(self) -> dict[str, Any]:
        """What an enforcement point may tell the agent and log: no token, no arguments."""
        document: dict[str, Any] = {
            "decision": self.outcome.value, "code": self.code, "reasons": list(self.reasons),
            "policy_ids": list(self.policy_ids), "revision": self.revision,
            "event_id": self.event_id,
        }
        if self.claims is not None:
            document["grant"] = {"id": self.claims.grant_id, "accessor": self.accessor,
                                 "task": self.claims.task_id, "agent": self.claims.agent_id}
        if self.approval is not None:
            document["approval"] = {"id": self.approval.id,
                                    "status": self.approval.status.value,
                                    "expires_at": self.approval.expires_at.isoformat()}
        return document


class Enforcer:
    """Decides tool calls: grant, agent, policy, approval, audit — fail-closed."""

    def __init__(self, grants: GrantAuthority, registry: AgentRegistry, engine: PolicyEngine,
                 audit: AuditLog, approvals: ApprovalQueue, clock: Clock, *,
                 base_principals: Sequence[dict[str, Any]] = (),
                 tools: KnownTools | None = None, agent_view: AgentView | None = None,
                 task_view: TaskView | None = None,
                 sync_policies: Callable[[], object] | None = None) -> None:
        self._grants = grants
        self._registry = registry
        self._engine = engine
        self._audit = audit
        self._approvals = approvals
        self._clock = clock
        self._base = list(base_principals)
        self._tools = tools
        # agents and tasks from memory while the change feed is current (reads once)
        self._agent_view = agent_view
        self._task_view = task_view
        # loads the active policy revision from the store (another process activated
        # it); with it, an allow's write confirms the revision it was decided on
        self._sync_policies = sync_policies
        self._synced = {a.id: _fingerprint(a) for a in registry.list_agents()}
        self._named: dict[tuple[str, str], tuple[EntityRef, str, EntityRef]] = {}
        # statistics of decide_*_on_loop: decisions whose part before the write ran on
        # the loop, and those sent whole to a worker thread (they needed the store)
        self.decided_on_loop = 0
        self.decided_on_thread = 0

    # deciding

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

    def _decide_or_refuse(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        try:
            with self._one_look():
                return self._decide(grant, call)
        except Exception as exc:  # an enforcement point must get an answer
            return self._failed(grant, call, exc)

    def _failed(self, grant: _Presented | HeldGrant, call: ToolCall,
                exc: Exception) -> CallVerdict:
        log.error("decision on `%s` failed: %s", call.tool_id[:200], type(exc).__name__)
        return self._refused(call, "enforcement_error",
                             f"the call could not be decided: {type(exc).__name__}",
                             held=isinstance(grant, HeldGrant))

    def _decide_traced(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        """:meth:`decide_call` in a span, counted: names, codes and ids only."""
        started = self._clock.monotonic()
        with _decision_span(call) as current:
            verdict = self._decide_or_refuse(grant, call)
            _traced(current, verdict)
        telemetry.record_decision(verdict.outcome.value, verdict.code,
                                  self._clock.monotonic() - started)
        return verdict

    def _one_look(self) -> contextlib.AbstractContextManager[None]:
        """One look at the change feed for the whole decision (the grant's agent, its
        task and its line read as of one moment; the write confirms them)."""
        view = self._agent_view
        return view.one_look() if view is not None else contextlib.nullcontext()

    async def decide_call_async(self, token: str, proof: str, call: ToolCall) -> CallVerdict:
        """:meth:`decide_call` off the event loop, in a worker thread (it reads and
        writes the store). :meth:`decide_call_on_loop` costs less."""
        return await anyio.to_thread.run_sync(self.decide_call, token, proof, call)

    async def decide_held_call_async(self, held: HeldGrant, call: ToolCall) -> CallVerdict:
        """:meth:`decide_held_call` off the event loop, in a worker thread."""
        return await anyio.to_thread.run_sync(self.decide_held_call, held, call)

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
            agent = self._registry.find(claims.agent_id)
            if agent is None or agent.trust_state in _INACTIVE:
                return self._refused(call, "agent_not_active", "the agent may no longer "
                                     "act", claims=claims, held=verdict.held)
            self._refresh(agent)
            if self._tools is not None and self._engine.catalog.by_action(
                    f"tool:{call.tool_id}") is None:
                self._tools.teach(self._engine)
            request = self._request(agent, self._grants.task(claims.task_id), claims, call)

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
            agent = self._registry.find(claims.agent_id)
            if agent is None or agent.trust_state in _INACTIVE:
                return self._refused_after(verdict, "agent_not_active",
                                           "the agent was suspended or retired while the "
                                           "call waited")
            self._refresh(agent)
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

    def _decide(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict:
        prepared = self._prepared(grant, call)
        if isinstance(prepared, CallVerdict):
            return prepared
        return self._policy(prepared)

    def _prepared(self, grant: _Presented | HeldGrant, call: ToolCall) -> CallVerdict | _Call:
        """The steps before policy: a refusal (written), or the call ready for policy."""
        held = isinstance(grant, HeldGrant)
        unreadable = _unreadable(call.tool_id, call.args)
        if unreadable is not None:
            # a lone surrogate (``"\\ud800"`` is valid JSON): no UTF-8 to audit or digest;
            # nesting past the cap (or arguments that contain themselves, from a caller in
            # this process): nothing could walk them without running out of stack
            tool_id = call.tool_id if isinstance(call.tool_id, str) else repr(call.tool_id)
            return self._refused(ToolCall(_printable(tool_id), {}, call.method,
                                          call.target, call.source_ip), "arguments_invalid",
                                 unreadable, held=held)
        try:
            if isinstance(grant, HeldGrant):
                use = self._grants.prepare_held(grant, tool_id=call.tool_id, args=call.args)
            else:
                use = self._grants.prepare(grant.token, grant.proof, method=call.method,
                                           target=call.target, tool_id=call.tool_id,
                                           args=call.args)
            accessor = self._grants.accessor_of(use.claims.grant_id)
        except ProctorError as exc:
            holder = getattr(exc, "holder", None)
            return self._refused(call, exc.code, exc.message, held=held,
                                 claims=holder if isinstance(holder, GrantClaims) else None)
        claims = use.claims
        try:  # from memory while the change feed is current, else from the store
            agent = (self._agent_view or self._registry).find(claims.agent_id)
            task = (self._task_view or self._grants).task(claims.task_id)
        except ProctorError as exc:  # the store, most likely: the grant's holder is known
            return self._refused(call, exc.code, exc.message, claims=claims, held=held)
        if agent is None:
            return self._refused(call, "agent_unknown", "the grant's agent is not registered",
                                 claims=claims, held=held)
        if agent.trust_state in _INACTIVE:
            return self._refused(call, "agent_not_active",
                                 f"agent is {agent.trust_state.value}", claims=claims,
                                 held=held)
        self._refresh(agent)
        if self._tools is not None and self._engine.catalog.by_action(
                f"tool:{call.tool_id}") is None:
            self._tools.teach(self._engine)  # discovered by another process, perhaps
        request = self._request(agent, task, claims, call)

        def fresh() -> tuple[Agent, DecisionRequest] | None:
            now = self._agent_again(claims)
            return None if now is None else (now, self._request(
                now, (self._task_view or self._grants).task(claims.task_id), claims, call))
        return _Call(claims, accessor, request, use, call, agent, fresh)

    def _agent_again(self, claims: GrantClaims) -> Agent | None:
        """The grant's agent as committed now, brought into the engine, after this
        process's copies of it and of the task are dropped (None: it may not act)."""
        if self._agent_view is not None:
            self._agent_view.forget(claims.agent_id)
        if self._task_view is not None:
            self._task_view.forget(claims.task_id)
        agent = self._registry.find(claims.agent_id)
        if agent is None or agent.trust_state in _INACTIVE:
            return None
        self._refresh(agent)
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
        decision = self._engine.decide(request)
        if decision.outcome is Outcome.APPROVAL_REQUIRED and approved is None:
            approval = self._approvals.consume(self._binding(claims, request))
            if approval is not None:
                spent = (approval, None)
            else:  # "approve similar within this task"
                similar = self._approvals.consume_similar(
                    agent_id=claims.agent_id, task_id=claims.task_id,
                    tool_id=request.resource.id, args=request.context.get("args") or {})
                if similar is not None:
                    # the write confirms the pre-approval unrevoked, as the grant's line
                    approval, use.also_live = similar[0], (similar[1],)
                    spent = similar
            if approval is not None:
                request = _approved(request)
                decision = self._engine.decide(request)
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

    def _request(self, agent: Agent, task: Task, claims: GrantClaims,
                 call: ToolCall) -> DecisionRequest:
        context = call_context(
            now=self._clock.now(), args=call.args, task=task.id, purpose=task.purpose,
            on_behalf_of=task.on_behalf_of, delegation_chain=claims.actor_chain[::-1],
            source_ip=call.source_ip, sensitivity_seen=Sensitivity(task.sensitivity_seen),
            grant_constrained=_constrained(claims.scope, call))
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

    def _refresh(self, agent: Agent) -> None:
        """Give the engine the agent's current trust state and risk when another
        process (or a review) changed them since the engine's entities were built."""
        fingerprint = _fingerprint(agent)
        if self._synced.get(agent.id) != fingerprint:
            self._engine.put_agent(agent_entity_of(agent))  # this agent's shard alone
            self._synced[agent.id] = fingerprint

    def ensure_current(self, agent_id: str, *, strict: bool = True) -> DecidedOn | None:
        """Make sure the engine sees ``agent_id`` as the registry does now; call it
        before deciding anything else about the agent (e.g. a grant issuance). Returns
        the trust state and risk it will be decided on (None: not registered).

        ``strict``: read the store. Otherwise from the agent view while its change feed
        is current (a change committed on another node may still be on its way: the
        caller's write confirms the state and risk returned, as a call's does)."""
        source = self._registry if strict or self._agent_view is None else self._agent_view
        agent = source.find(agent_id)
        if agent is None:
            return None
        self._refresh(agent)
        return DecidedOn(agent.trust_state.value, (agent.risk_score, agent.risk_factors))

    def catch_up(self) -> None:
        """Hear what other processes changed (agents, tasks, revocations) so far; the
        engine's agents follow. Cheap: on SQLite a ``PRAGMA`` unless something changed,
        on PostgreSQL nothing (changes arrive as they commit)."""
        if self._agent_view is not None:
            self._agent_view.is_current()

    def refresh_principals(self) -> None:
        """Bring the engine's agents up to the registry, e.g. after a registration: with
        an agent view whose change feed is current, the feed's changes so far (each
        changed agent alone); otherwise every agent, rebuilt."""
        if self._agent_view is not None and self._agent_view.is_current():
            return
        agents = self._registry.list_agents()
        sync_principals(self._engine, _Fixed(agents), self._base)
        self._synced = {a.id: _fingerprint(a) for a in agents}

    # refusals before policy

    def _refused(self, call: ToolCall, code: Code, message: str, *,
                 claims: GrantClaims | None = None, held: bool = False) -> CallVerdict:
        """A deny that never reached policy, audited as such."""
        event = self._refusal_event(call, code, message, claims, held=held)
        try:
            self._audit.record(event)
        except Exception:  # already a deny; say so loudly
            log.error("refusal `%s` could not be audited", code)
            return CallVerdict(Outcome.DENY, code, (message,), claims=claims)
        return CallVerdict(Outcome.DENY, code, (message,), event_id=event.id, claims=claims)

    def _refusal_event(self, call: ToolCall, code: Code, message: str,
                       claims: GrantClaims | None, *, held: bool = False) -> AuditEvent:
        """The event of a deny that is not policy's; the grant's agent is the actor only
        when the caller proved the grant's key (else `unauthenticated`); ``held``: the
        grant was held by this process (:meth:`decide_held_call`)."""
        now = self._clock.now()
        actor = (Actor(ActorType.AGENT, claims.agent_id) if claims is not None
                 else Actor(ActorType.SYSTEM, "unauthenticated"))
        detail: dict[str, Any] = {"code": code, "reason": message[:500]}
        if held:
            detail["holder"] = HELD_IN_PROCESS
        return AuditEvent(id=new_event_id(now), time=now, actor=actor,
                          action=f"tool:{call.tool_id[:200]}",
                          target=str(EntityRef("Tool", call.tool_id[:200])), outcome="denied",
                          task=claims.task_id if claims else "", source=call.source_ip,
                          detail=detail)

    def _refused_after(self, verdict: CallVerdict, code: Code, message: str) -> CallVerdict:
        """A call that was approved but may not go on after all; audited as its own deny."""
        tool_id = verdict.request.resource.id if verdict.request is not None else "unknown"
        refused = self._refused(ToolCall(tool_id, {}), code, message, claims=verdict.claims,
                                held=verdict.held)
        return replace(verdict, outcome=Outcome.DENY, code=code, reasons=(message,),
                       policy_ids=(), event_id=refused.event_id)


_Spent = tuple[Approval, "str | None"]
"""An approval a decision spent, and the pre-approval grant whose use it spent (None:
the approval of this exact call)."""


@dataclass(frozen=True, slots=True)
class _Call:
    """A call past the steps before policy: its grant's claims and use, the agent and
    the request as read, and how to read both again (``fresh``; None: read from the
    store just now)."""

    claims: GrantClaims
    accessor: str
    request: DecisionRequest
    use: GrantUse
    call: ToolCall
    agent: Agent
    fresh: Fresh | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A call decided by policy, its write (``event`` with ``call.use``) not yet done."""

    call: _Call
    decision: Decision
    event: AuditEvent
    approval: Approval | None
    spent: _Spent | None

    def settles_in_memory(self) -> bool:
        """Whether :meth:`Enforcer._written` answers without the store: not when the
        write refused a stale allow (decided once more), found the task lapsed (ended),
        or policy asks for an approval (requested)."""
        refusal = self.call.use.refusal
        if refusal is None:
            return self.decision.outcome is not Outcome.APPROVAL_REQUIRED
        stale = refusal.code in _STALE and self.call.fresh is not None
        return not stale and refusal.code not in _LAPSED


@dataclass(frozen=True, slots=True)
class _Presented:
    """A grant and the proof of possession presented with one call."""

    token: str = field(repr=False)
    proof: str = field(repr=False)


class _Fixed:
    def __init__(self, agents: list[Agent]) -> None:
        self._agents = agents

    def list_agents(self) -> list[Agent]:
        return self._agents


_NOT_UNICODE = ("the call's tool or arguments hold text that is not valid Unicode (a lone "
                "surrogate)")
_TOO_DEEP = (f"the call's arguments nest deeper than {MAX_DEPTH} levels (or contain "
             "themselves)")
_NOT_FINITE = ("the call's arguments hold a number JSON cannot carry (NaN or an infinity)")


def _unreadable(tool_id: object, args: object) -> str | None:
    """Why a call cannot be decided as it is, or None: every string in the tool id and the
    arguments (as JSON gives them, keys included) must encode as UTF-8, what the audit
    event, its digest and the store need, and the arguments may nest at most
    :data:`~proctor.documents.MAX_DEPTH` levels, as every transport's parser already
    holds them (a caller in this process could pass deeper ones, or a dict inside
    itself). A number must be finite: Python's JSON parsers (every transport's) read
    ``NaN`` and ``1e999``, which no JSON can carry on to the upstream, the store or
    an approval's binding. Walked without recursion."""
    if not isinstance(tool_id, str):
        return "the call's tool is not a name"
    if not is_unicode_text(tool_id):
        return _NOT_UNICODE
    stack: list[tuple[object, int]] = [(args, 0)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)  # the exact types first: an ABC's isinstance costs more
        if kind is str or (kind is not dict and isinstance(value, str)):
            if not is_unicode_text(cast(str, value)):
                return _NOT_UNICODE
        elif kind is dict or isinstance(value, Mapping):
            if depth >= MAX_DEPTH:
                return _TOO_DEEP
            for key, item in cast(Mapping[object, object], value).items():
                if isinstance(key, str) and not is_unicode_text(key):
                    return _NOT_UNICODE
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            if depth >= MAX_DEPTH:
                return _TOO_DEEP
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            return _NOT_FINITE
    return None


def _printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode escaped (``\\ud800``), for the refusal's event."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fingerprint(agent: Agent) -> tuple[Any, ...]:
    return (agent.trust_state, agent.risk_score, agent.risk_factors, agent.owner, agent.groups)


def _constrained(scope: GrantScope, call: ToolCall) -> set[str]:
    """The arguments every scope entry that allows ``call`` constrains: with two entries,
    one pinning ``recipient`` and one not, the call was not bound to a recipient."""
    entries = [t for t in scope.tools if t.allows(call.tool_id, call.args)]
    if not entries:
        return set()
    return set.intersection(*(set(t.args) for t in entries))


def _approved(request: DecisionRequest) -> DecisionRequest:
    return DecisionRequest(request.principal, request.action, request.resource,
                           {**request.context, "approved": True})


def _code(decision: Decision) -> VerdictCode:
    # every reason code but `policy_permit` (an allow's) is a Code: tests/test_codes.py
    return "allow" if decision.outcome is Outcome.ALLOW else cast(Code, decision.code.value)



def _decision_span(call: ToolCall) -> contextlib.AbstractContextManager[Any]:
    tool = call.tool_id[:200]
    return telemetry.span(f"proctor.decision {tool}", attributes={
        "gen_ai.tool.name": tool, "mcp.method.name": call.method[:64]})


def _traced(current: Any, verdict: CallVerdict) -> None:
    """The decision's span says what was decided: names, codes and ids only."""
    claims = verdict.claims
    telemetry.set_attributes(current, {
        "proctor.decision": verdict.outcome.value, "proctor.code": verdict.code,
        "proctor.policy_ids": list(verdict.policy_ids),
        "proctor.policy_revision": verdict.revision,
        "proctor.agent": claims.agent_id if claims else None,
        "proctor.task": claims.task_id if claims else None,
        "proctor.audit_event": verdict.event_id})
