"""The enforcer's state and what every part of it uses: the parts it decides with
(built once, by :class:`~proctor.enforcement.Enforcer`'s constructor, inherited from
here), the entity of each agent as read that policy decides on
(:meth:`_Enforcing.ensure_current`, :meth:`_Enforcing._entry`), the policy engine's
agents rebuilt (:meth:`_Enforcing.refresh_principals`), and the refusals that never
reach policy, each audited as such.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from proctor.approvals import ApprovalQueue
from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id
from proctor.clock import Clock
from proctor.codes import Code
from proctor.enforcement.calls import _fingerprint, _Fixed, log
from proctor.enforcement.verdicts import HELD_IN_PROCESS, CallVerdict, ToolCall
from proctor.grants import GrantAuthority, GrantClaims
from proctor.grants.accounting import ProofSpent
from proctor.grants.requests import DecidedOn
from proctor.grants.view import TaskView
from proctor.identity import Agent, AgentRegistry, AgentView, agent_entity_of, sync_principals
from proctor.policy import EntityRef, Outcome, PolicyEngine
from proctor.policy.known_tools import KnownTools

_ENTRIES_MOST = 100_000  # agents whose entity is kept (past it, all made again)


class _Enforcing:
    """The enforcer's parts and state; its agents kept current; its refusals."""

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
        # each agent's Cedar entity as last read (agent, its fingerprint, the entity):
        # what a decision on it is evaluated on (:meth:`_entry`). Not a record of what
        # the engine holds: the change feed's thread and other decisions put agents
        # there at any moment, and a decision checks, as it is evaluated, that the
        # engine's shard holds its entity (else puts it), whatever they did
        self._entries: dict[str, tuple[Agent, tuple[Any, ...], Mapping[str, Any]]] = {}
        self._named: dict[tuple[str, str], tuple[EntityRef, str, EntityRef]] = {}
        # statistics of decide_*_on_loop: decisions whose part before the write ran on
        # the loop, and those sent whole to a worker thread (they needed the store)
        self.decided_on_loop = 0
        self.decided_on_thread = 0

    def _one_look(self) -> contextlib.AbstractContextManager[None]:
        """One look at the change feed for the whole decision (the grant's agent, its
        task and its line read as of one moment; the write confirms them)."""
        view = self._agent_view
        return view.one_look() if view is not None else contextlib.nullcontext()

    def _entry(self, agent: Agent) -> Mapping[str, Any]:
        """The Cedar entity of ``agent`` as read (and as the decision's write confirms
        it): what policy decides on it with (:meth:`PolicyEngine.decide`'s ``agent``),
        whatever version of the agent the engine holds then. Made once per version
        read; the engine's own object when it holds an equal one, so that the engine's
        check is an identity test."""
        cached = self._entries.get(agent.id)
        if cached is not None and cached[0] is agent:
            return cached[2]
        fingerprint = _fingerprint(agent)
        if cached is not None and cached[1] == fingerprint:
            entity = cached[2]
        else:
            entity = agent_entity_of(agent)
            held = self._engine.agent_entry(agent.id)
            if held is not None and held == entity:
                entity = held
        if len(self._entries) >= _ENTRIES_MOST:
            self._entries.clear()
        self._entries[agent.id] = (agent, fingerprint, entity)
        return entity

    def _refresh(self, agent: Agent) -> Mapping[str, Any]:
        """:meth:`_entry`, put in the engine now unless it holds it (this agent's shard
        alone; a call's decision puts it as it is evaluated, if need be). A decision
        does not rely on it staying there: another thread may put another version at any
        moment, and :meth:`PolicyEngine.decide` evaluates on the entity it is given."""
        entity = self._entry(agent)
        if self._engine.agent_entry(agent.id) is not entity:
            self._engine.put_agent(cast(dict[str, Any], entity))  # the object: no copy
        return entity

    def ensure_current(self, agent_id: str, *, strict: bool = True) -> DecidedOn | None:
        """``agent_id`` as the registry has it now, put in the engine, for deciding
        anything else about the agent (e.g. a grant issuance): the trust state and risk
        it will be decided on, and its entity to decide on (:meth:`PolicyEngine.decide`'s
        ``agent``; None: not registered).

        ``strict``: read the store. Otherwise from the agent view while its change feed
        is current (a change committed on another node may still be on its way: the
        caller's write confirms the state and risk returned, as a call's does)."""
        source = self._registry if strict or self._agent_view is None else self._agent_view
        agent = source.find(agent_id)
        if agent is None:
            return None
        return DecidedOn(agent.trust_state.value, (agent.risk_score, agent.risk_factors),
                         self._refresh(agent))

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
        self._entries.clear()  # each made again: the engine's new objects taken

    # refusals before policy

    def _refused(self, call: ToolCall, code: Code, message: str, *,
                 claims: GrantClaims | None = None, held: bool = False,
                 spent: ProofSpent | None = None) -> CallVerdict:
        """A deny that never reached policy, audited as such; ``spent``: the nonce of
        the call's proof, verified before the refusal, claimed in the event's write (a
        replay is refused ``proof_replayed`` instead, naming no one)."""
        event = self._refusal_event(call, code, message, claims, held=held)
        try:
            if spent is None:
                self._audit.record(event)
            else:
                spent.refuse = lambda exc: self._refusal_event(call, exc.code, exc.message,
                                                               None, held=held)
                recorded = self._audit.record_with(event, spent)
                if spent.refusal is not None:
                    return CallVerdict(Outcome.DENY, spent.refusal.code,
                                       (spent.refusal.message,),
                                       event_id=recorded.event_id if recorded else None)
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
        tool = str(call.tool_id)[:200]  # a caller in this process may pass any object
        actor = (Actor(ActorType.AGENT, claims.agent_id) if claims is not None
                 else Actor(ActorType.SYSTEM, "unauthenticated"))
        detail: dict[str, Any] = {"code": code, "reason": message[:500]}
        if held:
            detail["holder"] = HELD_IN_PROCESS
        return AuditEvent(id=new_event_id(now), time=now, actor=actor,
                          action=f"tool:{tool}",
                          target=str(EntityRef("Tool", tool)), outcome="denied",
                          task=claims.task_id if claims else "", source=call.source_ip,
                          detail=detail)

    def _refused_after(self, verdict: CallVerdict, code: Code, message: str) -> CallVerdict:
        """A call that was approved but may not go on after all; audited as its own deny."""
        tool_id = verdict.request.resource.id if verdict.request is not None else "unknown"
        refused = self._refused(ToolCall(tool_id, {}), code, message, claims=verdict.claims,
                                held=verdict.held)
        return replace(verdict, outcome=Outcome.DENY, code=code, reasons=(message,),
                       policy_ids=(), event_id=refused.event_id)
