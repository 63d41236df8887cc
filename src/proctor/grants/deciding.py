"""Step 3 of an issuance (:mod:`proctor.grants.issuance`): each tool a grant's scope
covers decided by policy (``Action::"grant:issue"``) and audited, for a plain issuance
(:meth:`_Deciding.decide`, :meth:`_Deciding.decide_unwritten`), for the delegator of an
exchange or of the offer it made (:meth:`_Deciding.decide_delegated`), and for a tool
that appeared after its grant was issued (:meth:`_Deciding.decide_later_tool`). The
:class:`~proctor.grants.issuance.Issuer` is made of these decisions and its own key
binding and storing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from proctor.audit import AuditEvent, AuditLog, decision_event
from proctor.audit.recording import unaudited
from proctor.clock import Clock
from proctor.errors import AuditUnavailableError, GrantError, ScopeError
from proctor.grants.agents import (
    AgentDirectory,
    binding_refusal,
    line_refusal,
)
from proctor.grants.leases import LeaseTree
from proctor.grants.requests import (
    Decided,
    DecidedOn,
    Delegator,
    EnsureCurrent,
    ParentGrant,
    Request,
)
from proctor.grants.scope import GrantScope, ToolScope
from proctor.grants.tasks import Task
from proctor.grants.tokens import GrantClaims, TokenCodec
from proctor.grants.writes import _refusal_of
from proctor.policy import (
    Decision,
    DecisionRequest,
    EntityRef,
    Outcome,
    PolicyEngine,
    ReasonCode,
)
from proctor.policy.context import issue_context
from proctor.policy.known_tools import KnownTools
from proctor.store import Store

_MAX_LATER = 10_000

# the issuer's one logger, whichever of its modules logs
log = logging.getLogger("proctor.grants.issuance")


class _Deciding:
    """Deciding an issuance by policy (step 3): the issuer's parts, and every decision
    of a grant, a delegated grant or offer, and a later tool."""

    def __init__(self, store: Store, clock: Clock, codec: TokenCodec, engine: PolicyEngine,
                 agents: AgentDirectory, leases: LeaseTree, audit: AuditLog | None,
                 tools: KnownTools | None, *, max_risk: int) -> None:
        self._tools = tools
        self._later: dict[tuple[str, str, int | None], bool] = {}
        # the catalog's tool ids and what each scope's patterns cover, for the engine's
        # catalog as it is (a tool learnt replaces the catalog: computed again)
        self._covering: tuple[object, list[str], dict[tuple[str, ...], list[str]]] = (
            None, [], {})
        # makes the engine's entity of an agent the stored one before policy decides on
        # it (the enforcer's): a review or suspension a moment ago counts at once. Returns
        # the trust state decided on; ``strict=False`` may answer from memory (the write
        # then confirms that state)
        self.ensure_current: EnsureCurrent | None = None
        # loads the active policy revision from the store (with it, a grant's write
        # confirms the revision it was decided on), and drops an agent's entry from the
        # process's view: what a stale refusal calls before the issuance is decided again
        self.sync_policies: Callable[[], object] | None = None
        self.forget_agent: Callable[[str], None] | None = None
        # the risk from which a delegator lends nothing (the setting delegator_max_risk):
        # required, so that no caller gets "no limit" by forgetting it
        self.max_risk = max_risk
        self._store = store
        self._clock = clock
        self._codec = codec
        self._engine = engine
        self._agents = agents
        self._leases = leases
        self._audit = audit

    # deciding

    def decide(self, request: Request, *, ttl_seconds: int,
               again: GrantError | None = None) -> Decided:
        """Policy on each tool of the scope; raises ``issuance_denied`` or
        ``issuance_pending_approval``. Every decision is audited. The agent is read from
        the store first (what is decided here is stored, or offered, without a write that
        confirms the agent's trust state); the policy revisions it was decided on are
        returned (no events: written), for the write to confirm
        (:meth:`~proctor.grants.issuance.Issuer.offer`,
        :meth:`~proctor.grants.issuance.Issuer.grant` of an offer)."""
        state = self._current(request.agent_id, strict=True)
        decided = self._decided(request, ttl_seconds, state, again)
        if self._audit is not None and decided.events:
            _write(self._audit, decided.events)
        return Decided([], None, decided.revisions)

    def decide_unwritten(self, request: Request, *, ttl_seconds: int,
                         again: GrantError | bool | None = False,
                         strict: bool = False) -> Decided:
        """:meth:`decide`, but an issuance allowed on every tool returns its events
        unwritten, for :meth:`~proctor.grants.issuance.Issuer.grant` to write with the
        grant (a refusal is written before it is raised), and the agent as of the
        in-process view: the trust state and risk it was decided on, which the grant's
        write confirms (``agent_changed``).

        ``again``: the refusal of the write of this issuance decided first, which this
        decision replaces (its events say so: ``detail.decided_again``), or True if a
        stale refusal of this one's write will be decided once more (then its events are
        withdrawn: :class:`~proctor.grants.writes.NewGrant`). ``strict``: the agent read
        from the store, for decisions whose agent the write does not confirm (a
        delegator's: :meth:`decide_delegated`)."""
        state = self._current(request.agent_id, strict=strict or self._audit is None)
        if isinstance(again, GrantError):
            return self._decided(request, ttl_seconds, state, again)
        decided = self._decided(request, ttl_seconds, state)
        return Decided(decided.events, decided.agent, decided.revisions, again=bool(again))

    def decide_delegated(self, decided: Decided, request: Request, parent: ParentGrant, *,
                         ttl_seconds: int, again: GrantError | None) -> Decided:
        """``decided`` (the receiver's decisions of a delegated grant or offer, unwritten)
        decided for the delegator too, as it is now: a delegator hands on no more than
        policy would issue it now, so one that drifted, or that a policy refuses the tools
        since, cannot have them used in its task by another agent. An exchange and the
        redemption of the offer an exchange made both come here.

        First the parent still usable by the delegator as stored (its key and manifest;
        it active; it and the agents its grant derives from trusted, else
        ``delegator_not_trusted``: a refusal is audited as the issuance's), then the
        child's tools decided for it (read from the store, audited; a refusal raises).
        Its allows go with the child's write, after the child's own events: a child
        refused there leaves none of them. That write confirms the delegator as decided
        on here, as it confirms the receiver (:func:`~proctor.grants.writes._confirm_delegator`)."""
        refusal = binding_refusal(self._agents.binding(parent.agent_id),
                                  parent.key_thumbprint, parent.manifest_digest) \
            or line_refusal(self._agents.binding, (parent.agent_id, *parent.actor_chain),
                            (parent.manifest_digest, *parent.actor_manifests),
                            max_risk=self.max_risk)
        if refusal is not None:
            if decided.events:
                self._audit_refusal(decided.events[0], refusal)
            raise refusal
        delegator = self.decide_unwritten(Request(
            request.task, parent.agent_id, request.scope, request.expires_at,
            request.max_uses, parent.ancestors[0] if parent.ancestors else request.task.id,
            parent.ancestors, parent.actor_chain, request.approved), ttl_seconds=ttl_seconds,
            again=again if again is not None else False, strict=True)
        # the receiver's events first, then the delegator's, written with them (or not at
        # all); the policy revisions of both confirmed by the write
        revisions = (None if decided.revisions is None or delegator.revisions is None
                     else decided.revisions | delegator.revisions)
        return Decided([*decided.events, *delegator.events], decided.agent, revisions,
                       decided.again, Delegator(parent.agent_id, delegator.agent,
                                                parent.key_thumbprint, parent.manifest_digest))

    def _current(self, agent_id: str, *, strict: bool) -> DecidedOn | None:
        if self.ensure_current is None:
            return None
        return self.ensure_current(agent_id, strict=strict)

    def _decided(self, request: Request, ttl_seconds: int, state: DecidedOn | None,
                 again: GrantError | None = None) -> Decided:
        events: list[AuditEvent] = []
        revisions: set[int | None] = set()
        replaces = None if again is None else (again.code, again.message)
        entity = state.entity if state is not None else None
        for decision_request, decision in self._decisions(request, ttl_seconds, entity):
            revisions.add(decision.revision)
            if self._audit is not None:
                events.append(decision_event(decision_request, decision,
                                             now=self._clock.now(), decided_again=replaces))
            if decision.outcome is not Outcome.ALLOW:
                if self._audit is not None:
                    decision = _written(self._audit, events, decision)
                tool = decision_request.resource.id
                if decision.outcome is Outcome.APPROVAL_REQUIRED:
                    raise GrantError("issuance_pending_approval", f"issuing `{tool}` needs "
                                     f"approval: {'; '.join(decision.reasons)}")
                if decision.code is ReasonCode.ENGINE_ERROR:  # no policy's answer: a failure
                    raise GrantError("engine_error", f"issuing `{tool}` is denied: the policy "
                                     f"engine failed on it ({'; '.join(decision.reasons)})")
                raise GrantError("issuance_denied",
                                 f"issuing `{tool}` is denied: {'; '.join(decision.reasons)}")
        return Decided(events, state,
                       None if self.sync_policies is None else frozenset(revisions))

    def refuse_receiver(self, request: Request, ttl_seconds: int, reason: str) -> None:
        """An exchange's ``request`` for a receiver no grant may go to (no agent has its
        id, or it is suspended or retired: ``reason``), decided and written as a refusal
        by policy is: the engine decides its first tool for it (what a refusal by policy
        costs; its answer is not used) and the deny, naming ``reason``, is audited before
        the caller refuses, with the same answer as policy's. The delegating agent may not
        know the fleet: an answer that came sooner for an id no agent has (no decision,
        nothing written) would tell it which agents exist.

        One event is written whatever the scope: where it covers no tool known now (the
        catalog changed since the exchange expanded it, or a library caller's scope),
        the tool decided and named is its first entry as asked, so that the refusal is
        on the record all the same and the caller answers as it does for any other."""
        _check_not_empty(request.scope)  # bad input for every receiver, as covered_tools'
        try:
            tools = self.covered_tools(request.scope)[:1]
        except ScopeError:  # an entry matches no known tool: none is covered
            tools = []
        known = bool(tools)
        if not known:
            tools = [request.scope.tools[0].tool]
        for decision_request, decision in self._decided_for(request, ttl_seconds, tools,
                                                            remember=known):
            denied = Decision(Outcome.DENY, ReasonCode.INVALID_REQUEST,
                              reasons=(reason,), revision=decision.revision)
            if self._audit is not None:
                _written(self._audit, [decision_event(decision_request, denied,
                                                      now=self._clock.now())], denied)

    def _decisions(self, request: Request, ttl_seconds: int,
                   entity: Mapping[str, Any] | None
                   ) -> Iterator[tuple[DecisionRequest, Decision]]:
        return self._decided_for(request, ttl_seconds, self.covered_tools(request.scope),
                                 entity=entity)

    def _decided_for(self, request: Request, ttl_seconds: int, tools: Sequence[str], *,
                     remember: bool = True, entity: Mapping[str, Any] | None = None
                     ) -> Iterator[tuple[DecisionRequest, Decision]]:
        """Each tool's decision; ``entity``: the agent as read (:class:`DecidedOn`), which
        policy decides on, never the engine's entry of it if another thread put another
        (None: the engine's; a receiver refused before policy)."""
        task = request.task
        context = issue_context(now=self._clock.now(), task=task.id, purpose=task.purpose,
                                on_behalf_of=task.on_behalf_of, ttl_seconds=ttl_seconds,
                                max_uses=request.max_uses,
                                delegation_chain=request.actor_chain[::-1],
                                approved=request.approved)
        for tool in tools:
            decision_request = DecisionRequest(EntityRef("Agent", request.agent_id),
                                               "grant:issue", EntityRef("Tool", tool), context)
            yield decision_request, self._engine.decide(decision_request, remember=remember,
                                                        agent=entity)

    def known_tools(self, *scopes: GrantScope) -> list[str]:
        """The tools this process knows; if an entry of ``scopes`` matches none of them,
        it first learns the tools other processes discovered."""
        known = self._catalog()[0]
        missing = any(not any(e.matches_tool(t) for t in known)
                      for scope in scopes for e in scope.tools)
        if missing and self._tools is not None and self._tools.teach(self._engine):
            known = self._catalog()[0]
        return list(known)

    def _catalog(self) -> tuple[list[str], dict[tuple[str, ...], list[str]]]:
        catalog, known, covered = self._covering
        if catalog is not self._engine.catalog:
            catalog = self._engine.catalog
            known, covered = [t.tool_id for t in self._engine.catalog], {}
            self._covering = (catalog, known, covered)
        return known, covered

    def decide_later_tool(self, claims: GrantClaims, tool_id: str, task: Task,
                          max_uses: int | None) -> None:
        """A tool that appeared after ``claims``' grant was issued, matched by one of its
        wildcards: decided now as the issuance it would have been (audited), cached per
        grant, tool and policy revision. Raises ``issuance_denied`` (or
        ``issuance_pending_approval``, or ``scope_invalid`` for a tool nobody knows)."""
        revision = self._engine.active.revision if self._engine.active is not None else None
        key = (claims.grant_id, tool_id, revision)
        if key in self._later:
            return
        request = Request(task, claims.agent_id, GrantScope((ToolScope(tool_id),)),
                          claims.expires_at, max_uses, claims.ancestors[0]
                          if claims.ancestors else task.id, claims.ancestors,
                          claims.actor_chain)
        self.decide(request, ttl_seconds=max(1, claims.expires_at - claims.issued_at))
        if len(self._later) >= _MAX_LATER:
            self._later.clear()
        self._later[key] = True

    def covered_tools(self, scope: GrantScope) -> list[str]:
        """The known tools ``scope`` covers; an entry that covers none is refused, and so
        is a scope of no entries (a library caller's ``GrantScope(())``: a grant that
        covered nothing was issued with nothing decided and nothing audited).
        Which tools a scope covers depends only on its tool patterns and the catalog:
        kept per pattern list until the catalog changes."""
        _check_not_empty(scope)
        patterns = tuple(entry.tool for entry in scope.tools)
        covered = self._catalog()[1]  # for this catalog or an older one: never a newer
        found = covered.get(patterns)
        if found is not None:
            return list(found)
        tools = [t for t in self.known_tools(scope)
                 if any(entry.matches_tool(t) for entry in scope.tools)]
        unmatched = [e.tool for e in scope.tools if not any(e.matches_tool(t) for t in tools)]
        if unmatched:
            raise ScopeError(f"scope entry `{unmatched[0]}` matches no known tool")
        if len(covered) >= _MAX_LATER:
            covered.clear()
        covered[patterns] = tools
        return list(tools)

    def _audit_refusal(self, event: AuditEvent, refusal: GrantError) -> None:
        """Write the event of ``refusal`` of the issuance ``event`` is a decision of; if
        it cannot be written, the refusal stands all the same (said in the log)."""
        if self._audit is None:
            return
        try:
            self._audit.record(_refusal_of(event, refusal, self._clock.now()))
        except AuditUnavailableError:
            log.error("the refusal `%s` of an issuance's write could not be audited",
                      refusal.code)


def _check_not_empty(scope: GrantScope) -> None:
    """Refuse a scope of no entries, as a scope document without tools is refused."""
    if not scope.tools:
        raise ScopeError("a scope needs a non-empty `tools` list")


def _write(audit: AuditLog, events: Sequence[AuditEvent]) -> None:
    """Write ``events`` and wait until all are durable."""
    receipts = [audit.submit(event) for event in events]
    for receipt in receipts:
        receipt.wait(audit.timeout)


def _written(audit: AuditLog, events: Sequence[AuditEvent], decision: Decision) -> Decision:
    """``decision`` once ``events`` are durable; a deny ``audit_unavailable`` if not."""
    try:
        _write(audit, events)
    except AuditUnavailableError as exc:
        return unaudited(audit, decision, exc)
    return decision
