"""Making grants: deciding an issuance, binding it to a proven key, storing it.

Every grant — issued for a task, delegated by exchange, redeemed from an offer,
or made by "approve similar" — goes through :class:`Issuer`, in this order:

1. the agent it names is registered and active;
2. the key it will be bound to is one that agent proved (:mod:`proctor.grants.holders`);
   an agent without a registered key that did not prove one itself gets an offer;
3. each tool the scope covers is decided by policy (``Action::"grant:issue"``), audited;
4. in one transaction: the proof's nonce is new, the agent is still active, nothing
   in the new grant's lineage is revoked, a delegated grant's uses are taken out of
   its parent's, an offer redeemed is taken, and the lease node and the grant row are
   written.

A grant issued or exchanged is decided on what this process holds (the agent from its
view, the policy revision its engine runs); its write confirms both: the agent in the
trust state, with the risk, key and manifest decided on (``agent_changed``), and the
policy revision decided on still the active one (``policy_changed``, another process
activated one that this one loads every ``sync_seconds``). An exchange's write, and the
write of the redemption of an offer an exchange made, confirm the delegator the same
way, in the trust state and risk the tools were decided for it on (read from the store:
:meth:`Issuer.decide_delegated`), its grant still usable by it (:func:`_confirm_delegator`). Such a
refusal stores nothing and drops what was stale here (the agent's entry in the view;
the engine's revision, loaded again), and the issuance is decided once more
(:meth:`~proctor.grants.authority.GrantAuthority.issue`, ``exchange``).

A grant issued, exchanged or redeemed from an offer (whose write takes the offer), and
an offer (:class:`NewOffer`), take steps 3 and 4 in one write: the decisions' events
and the grant (:class:`NewGrant`, the effects of the first event) go to the audit
writer together and share its group commit with whatever else is waiting; the token
is handed out once that has committed. The events stand only with the grant: a write
that refuses it writes none of them, but the refusal's event (``denied``, its code), or
nothing if the issuance is decided once more, whose events then name the refusal
(``detail.decided_again``). A write that fails (the audit log cannot take it) writes
none of them either: the attempt leaves its refusal's event (``issuance_denied``), or,
if even that cannot be written, is refused all the same. An issuance policy refuses
writes its events alone; one the engine failed on is refused ``engine_error``, not
``issuance_denied``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from sqlalchemy import Connection, and_, insert, select

from proctor.audit import AuditEvent, AuditLog, WriteCursor, decision_event, new_event_id
from proctor.audit.recording import unaudited
from proctor.audit.writer import WITHDRAWN
from proctor.clock import Clock
from proctor.errors import AgentError, AuditUnavailableError, GrantError, IdentityError, ScopeError
from proctor.grants.accounting import claim_nonce, nonce_kept_until, reserve_uses
from proctor.grants.agents import AgentBinding, AgentDirectory, binding_refusal, line_refusal
from proctor.grants.holders import HolderProof
from proctor.grants.leases import LeaseTree
from proctor.grants.offers import (
    OFFER_TTL_SECONDS,
    GrantOffer,
    new_offer_id,
    save_offer,
    take_offer,
)
from proctor.grants.proofs import VerifiedProof, verify_proof
from proctor.grants.scope import GrantScope, ToolScope
from proctor.grants.tasks import Task
from proctor.grants.tokens import MAX_TOKEN_BYTES, GrantClaims, TokenCodec, token_hash
from proctor.grants.use import AgentRead, Risk, active_revision, any_revoked, riskier
from proctor.identity.agent import ACTIVE_STATES
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
from proctor.store.tables import grants, policy_revisions
from proctor.store.tables import leases as lease_table

__all__ = ["ISSUE_METHOD", "STALE", "Decided", "DecidedOn", "Delegator", "EnsureCurrent",
           "IssuedGrant", "Issuer", "NewGrant", "NewOffer", "ParentGrant"]

ISSUE_METHOD = "grant/issue"
# an issuance whose write refused it for what another process had changed meanwhile:
# decided once more, on what is committed
STALE = ("agent_changed", "policy_changed")
_MAX_LATER = 10_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IssuedGrant:
    token: str
    accessor: str
    claims: GrantClaims

    @property
    def grant_id(self) -> str:
        return self.claims.grant_id


class DecidedOn(NamedTuple):
    """The agent as policy will decide an issuance on it: its trust state and its risk
    (``principal.risk_score``, ``principal.risk_factors``). A grant's write confirms
    both (``agent_changed``), as a call's does."""

    state: str
    risk: Risk


class Delegator(NamedTuple):
    """An exchange's delegator as the child's tools were decided for it: its agent id, the
    trust state and risk read from the store (None: not known), and the key and manifest
    its grant (the parent) is bound to. The child's write confirms them as it confirms its
    own agent (``agent_changed``), and the parent still usable by them."""

    agent_id: str
    decided: DecidedOn | None
    key_thumbprint: str
    manifest_digest: str | None


class ParentGrant(NamedTuple):
    """The grant a delegated grant (or offer) is made from, as its delegator holds it:
    the grant, its agent (the delegator) and that grant's own line, which the child's
    tools are decided in for the delegator, and the key and manifest it is bound to,
    which the child's write confirms the delegator still holds (:class:`Delegator`)."""

    grant_id: str
    agent_id: str
    ancestors: tuple[str, ...]
    actor_chain: tuple[str, ...]
    key_thumbprint: str
    manifest_digest: str | None

    @classmethod
    def of(cls, claims: GrantClaims) -> ParentGrant:
        return cls(claims.grant_id, claims.agent_id, claims.ancestors, claims.actor_chain,
                   claims.key_thumbprint, claims.manifest_digest)


class EnsureCurrent(Protocol):
    def __call__(self, agent_id: str, *, strict: bool) -> DecidedOn | None: ...


@dataclass(frozen=True, slots=True)
class Decided:
    """An issuance policy allowed on every tool: its decisions' events, unwritten, the
    agent's trust state and risk they were decided on (None: not known) and the policy
    revisions they were decided on (None: not confirmed)."""

    events: list[AuditEvent]
    agent: DecidedOn | None = None
    revisions: frozenset[int | None] | None = None
    again: bool = False  # a stale refusal of its write is decided once more
    delegator: Delegator | None = None  # an exchange's: confirmed by the write too


@dataclass(frozen=True, slots=True)
class Request:
    """One grant to make: for whom, under what, for how long (absolute), how often."""

    task: Task
    agent_id: str
    scope: GrantScope
    expires_at: int
    max_uses: int | None
    parent_id: str  # the task, or the grant it is delegated from
    ancestors: tuple[str, ...] = ()
    actor_chain: tuple[str, ...] = ()
    approved: bool = False
    wildcards: GrantScope | None = None  # as asked for: later tools are decided then
    manifest_digest: str | None = None  # the manifest the agent runs as it is issued
    agent_key: str | None = None  # the agent's registered key as read (a write confirms it)

    @property
    def lineage(self) -> tuple[str, ...]:
        return (*self.ancestors, self.task.id) if self.ancestors else (self.task.id,)


class Issuer:
    """The one way grants and offers are made (see the module docstring)."""

    def __init__(self, store: Store, clock: Clock, codec: TokenCodec, engine: PolicyEngine,
                 agents: AgentDirectory, leases: LeaseTree, audit: AuditLog | None,
                 tools: KnownTools | None = None) -> None:
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
        self._store = store
        self._clock = clock
        self._codec = codec
        self._engine = engine
        self._agents = agents
        self._leases = leases
        self._audit = audit

    # the key

    def proven_key(self, agent_id: str, key_thumbprint: str | None,
                   holder: HolderProof | None, *, same_key_as: str | None = None,
                   task_id: str | None = None) -> tuple[str, VerifiedProof | None]:
        """The thumbprint to bind a grant for ``agent_id`` to, and the holder proof that
        proved it (its nonce is claimed when the grant is stored)."""
        now = self._clock.now()
        if key_thumbprint is not None:  # a registered key: that one, always
            if holder is None:
                return key_thumbprint, None
            proof = verify_proof(holder.proof, token=None, key_thumbprint=key_thumbprint,
                                 method=ISSUE_METHOD, target=self._codec.issuer, now=now)
            return proof.key_thumbprint, proof
        if same_key_as is not None and holder is None:
            return self._key_of(same_key_as, agent_id, task_id), None
        if holder is None or holder.identity is None:
            raise GrantError("holder_identity_missing", f"agent `{agent_id}` has no registered "
                             "key: a grant for it is bound to a key it proves with its own "
                             "identity proof, so it redeems an offer (or sends its identity "
                             "proof and a holder proof itself)")
        try:
            proven = self._agents.prove(holder.identity)
        except IdentityError as exc:
            raise GrantError("holder_identity_invalid", f"the identity proof was refused "
                             f"({exc.code}): {exc.message}") from exc
        if proven != agent_id:
            raise GrantError("holder_identity_mismatch", f"the identity proof is `{proven}`'s, "
                             f"not `{agent_id}`'s")
        # ath = the identity proof's hash: the key and the identity were shown together
        proof = verify_proof(holder.proof, token=holder.identity, key_thumbprint=None,
                             method=ISSUE_METHOD, target=self._codec.issuer, now=now)
        return proof.key_thumbprint, proof

    def _key_of(self, grant_id: str, agent_id: str, task_id: str | None) -> str:
        """The key of an earlier grant of the same agent in the same task."""
        with self._store.reading() as conn:
            found = conn.execute(select(grants.c.key_thumbprint).join(
                lease_table, lease_table.c.id == grants.c.id).where(and_(
                    grants.c.id == grant_id, lease_table.c.agent_id == agent_id,
                    lease_table.c.task_id == task_id))).scalar()
        if not found:
            raise GrantError("holder_identity_missing", f"grant `{grant_id[:80]}` is not a "
                             f"grant of `{agent_id}` in this task with a known key")
        return str(found)

    # deciding

    def decide(self, request: Request, *, ttl_seconds: int,
               again: GrantError | None = None) -> Decided:
        """Policy on each tool of the scope; raises ``issuance_denied`` or
        ``issuance_pending_approval``. Every decision is audited. The agent is read from
        the store first (what is decided here is stored, or offered, without a write that
        confirms the agent's trust state); the policy revisions it was decided on are
        returned (no events: written), for the write to confirm (:meth:`offer`,
        :meth:`grant` of an offer)."""
        state = self._current(request.agent_id, strict=True)
        decided = self._decided(request, ttl_seconds, state, again)
        if self._audit is not None and decided.events:
            _write(self._audit, decided.events)
        return Decided([], None, decided.revisions)

    def decide_unwritten(self, request: Request, *, ttl_seconds: int,
                         again: GrantError | bool | None = False,
                         strict: bool = False) -> Decided:
        """:meth:`decide`, but an issuance allowed on every tool returns its events
        unwritten, for :meth:`grant` to write with the grant (a refusal is written
        before it is raised), and the agent as of the in-process view: the trust state
        and risk it was decided on, which the grant's write confirms (``agent_changed``).

        ``again``: the refusal of the write of this issuance decided first, which this
        decision replaces (its events say so: ``detail.decided_again``), or True if a
        stale refusal of this one's write will be decided once more (then its events are
        withdrawn: :class:`NewGrant`). ``strict``: the agent read from the store, for
        decisions whose agent the write does not confirm (a delegator's: :meth:`also`)."""
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
        on here, as it confirms the receiver (:func:`_confirm_delegator`)."""
        refusal = binding_refusal(self._agents.binding(parent.agent_id),
                                  parent.key_thumbprint, parent.manifest_digest) \
            or line_refusal(self._agents.binding, (parent.agent_id, *parent.actor_chain))
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
        for decision_request, decision in self._decisions(request, ttl_seconds):
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

    def _decisions(self, request: Request, ttl_seconds: int
                   ) -> Iterator[tuple[DecisionRequest, Decision]]:
        tools = self.covered_tools(request.scope)
        task = request.task
        context = issue_context(now=self._clock.now(), task=task.id, purpose=task.purpose,
                                on_behalf_of=task.on_behalf_of, ttl_seconds=ttl_seconds,
                                max_uses=request.max_uses,
                                delegation_chain=request.actor_chain[::-1],
                                approved=request.approved)
        for tool in tools:
            decision_request = DecisionRequest(EntityRef("Agent", request.agent_id),
                                               "grant:issue", EntityRef("Tool", tool), context)
            yield decision_request, self._engine.decide(decision_request, remember=True)

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
        """The known tools ``scope`` covers; an entry that covers none is refused.
        Which tools a scope covers depends only on its tool patterns and the catalog:
        kept per pattern list until the catalog changes."""
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

    # storing

    def grant(self, request: Request, key_thumbprint: str, proof: VerifiedProof | None, *,
              offer: GrantOffer | None = None, decided: Decided | None = None
              ) -> IssuedGrant:
        """Sign and store the grant; one transaction (see the module docstring), the
        audit writer's with ``decided``'s events (the issuance's decisions) when there
        are any."""
        events = decided.events if decided is not None else ()
        now = self._clock.now()
        issued_at = int(now.timestamp())
        expires_at = request.expires_at
        if request.task.expires_at is not None:  # never past the task's own lifetime
            expires_at = min(expires_at, int(request.task.expires_at.timestamp()))
        if expires_at <= issued_at:
            raise GrantError("grant_ttl_invalid", "the grant would expire before it is issued")
        claims = GrantClaims(
            grant_id=f"grant_{secrets.token_hex(12)}", agent_id=request.agent_id,
            task_id=request.task.id, issuer=self._codec.issuer, audience=self._codec.audience,
            issued_at=issued_at, not_before=issued_at, expires_at=expires_at,
            scope=request.scope, key_thumbprint=key_thumbprint, ancestors=request.ancestors,
            actor_chain=request.actor_chain, wildcards=request.wildcards,
            manifest_digest=request.manifest_digest)
        token = self._codec.encode(claims)
        if len(token) > MAX_TOKEN_BYTES:
            raise ScopeError(f"a grant for {len(request.scope.tools)} scope entries is over "
                             f"{MAX_TOKEN_BYTES} bytes: name the tools the task needs")
        accessor = f"acc_{secrets.token_hex(12)}"
        if events and self._audit is not None:
            new = NewGrant(claims, accessor, token_hash(token), request, now, proof,
                           self._agents.binding_in,
                           decided.agent if decided is not None else None,
                           decided.revisions if decided is not None else None,
                           event=events[0], again=decided is not None and decided.again,
                           offer=offer,
                           delegator=decided.delegator if decided is not None else None)
            self._store_with(self._audit, events, new, "issuance")
            return IssuedGrant(token, accessor, claims)
        with self._store.transaction() as conn:
            self._confirm(conn, request, decided)
            if offer is not None:
                take_offer(conn, offer, claims.grant_id, now)
            if proof is not None:
                claim_nonce(conn, proof, now)
            if request.parent_id != request.task.id:
                reserve_uses(conn, request.parent_id, request.max_uses)
            self._leases.add(conn, node_id=claims.grant_id, parent_id=request.parent_id,
                             kind="grant", task_id=claims.task_id, agent_id=claims.agent_id,
                             expires_at=datetime.fromtimestamp(expires_at, tz=now.tzinfo))
            conn.execute(insert(grants).values(
                id=claims.grant_id, accessor=accessor, token_hash=token_hash(token),
                scope=claims.scope.as_json(), max_uses=request.max_uses, uses=0,
                key_thumbprint=key_thumbprint))
        return IssuedGrant(token, accessor, claims)

    def _store_with(self, audit: AuditLog, events: Sequence[AuditEvent],
                    new: NewGrant | NewOffer, what: str) -> None:
        """Write ``events`` with ``new`` (a grant or an offer, stored by their first);
        raise what refused it. A write that fails stored nothing and wrote none of
        them: the attempt leaves its refusal (if even that cannot be written, the
        refusal stands alone)."""
        try:  # one write: the first event carries ``new``, the others go with it
            audit.record_with(events[0], new, more=events[1:])
        except AuditUnavailableError as exc:
            refusal = GrantError("issuance_denied", f"the {what} could not be audited, so "
                                 f"it is denied: {exc.message}")
            self._audit_refusal(events[0], refusal)
            raise refusal from exc
        if new.refusal is not None:
            self._renew(new.refusal.code, new.request.agent_id)
            raise new.refusal

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

    def _renew(self, code: str, agent_id: str) -> None:
        """Drop what a refusal ``code`` says this process held stale, so that the
        issuance asked again is decided on what is committed."""
        if code == "agent_changed" and self.forget_agent is not None:
            self.forget_agent(agent_id)
        elif code == "policy_changed" and self.sync_policies is not None:
            self.sync_policies()

    @property
    def confirms_agent(self) -> bool:
        """Whether a grant issued or exchanged is stored by a write that confirms its
        agent as read (:class:`NewGrant`), so that the agent may be read from this
        process's view rather than the store."""
        return self._audit is not None

    def offer(self, request: Request, decided: Decided | None = None) -> GrantOffer:
        """Store ``request`` as an offer for its agent to redeem; its write confirms the
        policy revisions ``decided`` (:meth:`decide`'s) names still active."""
        now = self._clock.now()
        expires_at = datetime.fromtimestamp(request.expires_at, tz=now.tzinfo)
        if request.task.expires_at is not None:
            expires_at = min(expires_at, request.task.expires_at)
        held_by = decided.delegator if decided is not None else None
        offer = GrantOffer(
            new_offer_id(), request.task.id, request.parent_id, request.agent_id,
            request.scope, request.max_uses, request.ancestors, request.actor_chain,
            request.approved, now, min(now + timedelta(seconds=OFFER_TTL_SECONDS), expires_at),
            expires_at, wildcards=request.wildcards,
            # what its redemption confirms of the delegator, as the exchange's write did
            parent_key=held_by.key_thumbprint if held_by is not None else None,
            parent_manifest=held_by.manifest_digest if held_by is not None else None)
        events = decided.events if decided is not None else []
        if events and self._audit is not None:
            new2 = NewOffer(offer, request, now, self._agents.binding_in,
                            decided.agent if decided is not None else None,
                            decided.revisions if decided is not None else None,
                            event=events[0], again=decided is not None and decided.again,
                            delegator=decided.delegator if decided is not None else None)
            self._store_with(self._audit, events, new2, "offer")
            return offer
        with self._store.transaction() as conn:
            self._confirm(conn, request, decided)
            save_offer(conn, offer)
        return offer

    def _confirm(self, conn: Connection, request: Request, decided: Decided | None) -> None:
        """Without an audit log: the agent (and a delegator) still active, nothing in the
        lineage revoked, the policy revisions decided on still active."""
        revisions = decided.revisions if decided is not None else None
        delegator = decided.delegator if decided is not None else None
        for agent_id, who in ((request.agent_id, "agent"),
                              *(((delegator.agent_id, "delegator"),) if delegator else ())):
            if not self._agents.confirm_active(conn, agent_id):
                raise AgentError("agent_not_active",
                                 f"{who} `{agent_id}` is suspended or retired")
        lineage: Sequence[str] = (request.parent_id, *request.lineage)
        if self._leases.revoked_among(conn, dict.fromkeys(lineage)):
            raise GrantError("grant_revoked", "the parent task or grant is revoked")
        if revisions is not None:
            cols = policy_revisions.c
            active = conn.execute(select(cols.id).where(cols.status == "active")
                                  .order_by(cols.id.desc()).limit(1)).scalar()
            if any(revision != active for revision in revisions):
                self._renew("policy_changed", request.agent_id)
                raise GrantError("policy_changed", f"policy revision {active} is active now, "
                                 "not the one the issuance was decided on: ask again")


_NONCE = "INSERT INTO proof_nonces (nonce, expires_at) VALUES ({p}, {p}) ON CONFLICT DO NOTHING"
_PARENT_USES = "SELECT max_uses, uses FROM grants WHERE id = {p}"
_RESERVE = ("UPDATE grants SET uses = uses + {p} WHERE id = {p} "
            "AND uses + {p} <= max_uses")
_LEASES = ("INSERT INTO leases (id, parent_id, kind, task_id, agent_id, created_at, "
           "expires_at) VALUES ")
_LEASE_ROW = "({p}, {p}, 'grant', {p}, {p}, {p}, {p})"
_GRANTS = ("INSERT INTO grants (id, accessor, token_hash, scope, max_uses, uses, "
           "key_thumbprint) VALUES ")
_GRANT_ROW = "({p}, {p}, {p}, {p}, {p}, 0, {p})"
_TAKE_OFFER = ("UPDATE grant_offers SET redeemed_at = {p}, grant_id = {p} WHERE id = {p} "
               "AND redeemed_at IS NULL AND cancelled_at IS NULL")
_GIVE_BACK_OFFER = ("UPDATE grant_offers SET redeemed_at = NULL, grant_id = NULL "
                    "WHERE id = {p} AND grant_id = {p}")
_ROWS_PER_INSERT = 500  # 6 parameters a row (12 on PostgreSQL): well under either's limit


def _insert(tx: WriteCursor, head: str, row: str, rows: Sequence[Sequence[object]]) -> None:
    """``rows`` inserted by one statement per :data:`_ROWS_PER_INSERT`."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start:start + _ROWS_PER_INSERT]
        tx.execute(head + ", ".join([row] * len(chunk)),
                   [value for values in chunk for value in values])


@dataclass(slots=True)
class NewGrant:
    """Storing a grant, as the effects of its issuance's audit event: step 4 of the
    module docstring, in the audit writer's transaction. After the write,
    ``refusal`` is the check that failed (nothing stored), or None."""

    claims: GrantClaims
    accessor: str
    token_hash: str
    request: Request
    now: datetime
    proof: VerifiedProof | None
    agent: AgentRead
    decided: DecidedOn | None = None  # the trust state and risk policy decided on: confirmed
    revisions: frozenset[int | None] | None = None  # the policy revisions decided on: confirmed
    refusal: GrantError | None = None
    event: AuditEvent | None = None  # the first decision's event, which carries this
    again: bool = False  # a stale refusal is decided once more: its events are withdrawn
    offer: GrantOffer | None = None  # redeemed by this grant: taken in its write
    delegator: Delegator | None = None  # an exchange's, as its tools were decided: confirmed

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        return NewGrant.apply_all(tx, [self])[0]

    @classmethod
    def apply_all(cls, tx: WriteCursor, news: Sequence[NewGrant]) -> list[AuditEvent | None]:
        """The new grants of a batch, in its order: each checked (a refusal stores
        nothing of it), then the lease nodes and the grant rows of those that passed,
        by one multi-row ``INSERT`` each (on PostgreSQL one statement for both: a
        round trip less). The batch's agents are read first, then the nodes of all
        its lines by one statement, with the active policy revision (what each
        grant's check then finds confirmed: one read for the batch rather than one
        per line).

        The decisions' events stand with the grant (None), and only with it: a refused
        grant's events are withdrawn (:data:`~proctor.audit.writer.WITHDRAWN`) if it is
        decided once more (``again``, a stale refusal), else the first is the refusal's
        event. The issuance's other events are the first one's ``more``
        (:meth:`~proctor.audit.AuditLog.record_with`): written in its transaction if it
        stands, else none of them."""
        agents: set[str] = set()
        for new in news:  # each read once per transaction: kept in tx.confirmed
            if new.request.agent_id not in agents:
                agents.add(new.request.agent_id)
                new.agent(tx, new.request.agent_id)
        any_revoked(tx, [node for new in news
                         for node in (new.request.parent_id, *new.request.lineage)],
                    revision=any(new.revisions is not None for new in news))
        passed: list[NewGrant] = []
        for new in news:
            new.refusal = None
            try:
                new._check(tx)
            except GrantError as exc:
                new.refusal = exc
            else:
                passed.append(new)
        if passed and tx.is_sqlite:
            _insert(tx, _LEASES, _LEASE_ROW, [new._lease_row(tx) for new in passed])
            _insert(tx, _GRANTS, _GRANT_ROW, [new._grant_row() for new in passed])
        elif passed:
            for start in range(0, len(passed), _ROWS_PER_INSERT):
                chunk = passed[start:start + _ROWS_PER_INSERT]
                tx.execute("WITH nodes AS (" + _LEASES + ", ".join([_LEASE_ROW] * len(chunk))
                           + ") " + _GRANTS + ", ".join([_GRANT_ROW] * len(chunk)),
                           [value for new in chunk for value in new._lease_row(tx)]
                           + [value for new in chunk for value in new._grant_row()])
        return [new._refusal_event() for new in news]

    def _refusal_event(self) -> AuditEvent | None:
        """What this issuance's first event becomes: itself (stored), none (decided once
        more), or its refusal's event (the write's code and reason; no grant)."""
        refusal, event = self.refusal, self.event
        if refusal is None or event is None:
            return None
        if self.again and refusal.code in STALE:
            return WITHDRAWN  # decided once more: that decision's events are the record
        return _refusal_of(event, refusal, self.now)

    def _lease_row(self, tx: WriteCursor) -> tuple[object, ...]:
        claims = self.claims
        expires = datetime.fromtimestamp(claims.expires_at, tz=self.now.tzinfo)
        return (claims.grant_id, self.request.parent_id, claims.task_id, claims.agent_id,
                tx.time(self.now), tx.time(expires))

    def _grant_row(self) -> tuple[object, ...]:
        claims = self.claims
        return (claims.grant_id, self.accessor, self.token_hash,
                json.dumps(claims.scope.as_json()), self.request.max_uses,
                claims.key_thumbprint)

    def _check(self, tx: WriteCursor) -> None:
        """Step 4 of the module docstring but the two rows: raises the refusal."""
        request = self.request
        agent = _confirm_agent(tx, self.agent, request.agent_id, self.decided)
        if (agent.key_thumbprint, agent.manifest_digest) != (request.agent_key,
                                                             request.manifest_digest):
            raise GrantError("agent_changed", "the agent's key or manifest changed since the "
                             "issuance was read: ask again")
        _confirm_delegator(tx, self.agent, self.delegator, self.request.actor_chain)
        _confirm_lineage(tx, request, self.revisions)
        offer = self.offer
        if offer is not None and tx.execute(_TAKE_OFFER, [tx.time(self.now),
                                                          self.claims.grant_id, offer.id]) != 1:
            raise GrantError("offer_redeemed", f"offer `{offer.id}` was already redeemed or "
                             "cancelled")
        nonce = None
        if self.proof is not None:
            nonce = self.proof.nonce
            if tx.execute(_NONCE, [nonce, tx.time(nonce_kept_until(self.proof,
                                                                   self.now))]) != 1:
                self._give_back(tx, None)
                raise GrantError("proof_replayed", "this proof was already used")
        if request.parent_id != request.task.id:
            self._reserve(tx, nonce)

    def _give_back(self, tx: WriteCursor, nonce: str | None) -> None:
        """A refused issuance changes nothing: the proof's nonce and the offer it took
        are given back."""
        if nonce is not None:
            tx.execute("DELETE FROM proof_nonces WHERE nonce = {p}", [nonce])
        if self.offer is not None:
            tx.execute(_GIVE_BACK_OFFER, [self.offer.id, self.claims.grant_id])

    def _reserve(self, tx: WriteCursor, nonce: str | None) -> None:
        """A child of a use-limited grant takes its uses out of the parent's."""
        parent = tx.rows(_PARENT_USES, [self.request.parent_id])
        if not parent or parent[0][0] is None:
            return
        wanted = self.request.max_uses
        left = int(parent[0][0]) - int(parent[0][1])
        refusal = None
        if wanted is None or wanted > left:
            refusal = GrantError("delegation_widens_uses", f"the parent grant has {left} uses "
                                 "left: the child must ask for at most that many")
        elif tx.execute(_RESERVE, [wanted, self.request.parent_id, wanted]) != 1:
            refusal = GrantError("grant_uses_exhausted", "the parent grant has no uses left")
        if refusal is not None:
            self._give_back(tx, nonce)
            raise refusal


_OFFER = ("INSERT INTO grant_offers (id, task_id, parent_id, agent_id, scope, max_uses, "
          "ancestors, actor_chain, approved, created_at, redeem_by, expires_at) VALUES "
          "({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})")


@dataclass(slots=True)
class NewOffer:
    """Storing an offer, as the effects of its decisions' first audit event (the others
    go with it, as a grant's do: :class:`NewGrant`): the agent still active (in the
    trust state and with the risk decided on, if known), nothing in the lineage revoked,
    the policy revisions decided on still active, then the offer's row. After the write,
    ``refusal`` is the check that failed (nothing stored), or None."""

    offer: GrantOffer
    request: Request
    now: datetime
    agent: AgentRead
    decided: DecidedOn | None = None
    revisions: frozenset[int | None] | None = None
    refusal: GrantError | None = None
    event: AuditEvent | None = None
    again: bool = False
    delegator: Delegator | None = None  # an exchange's, as its tools were decided: confirmed

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None
        try:
            self._check(tx)
        except GrantError as exc:
            self.refusal = exc
            if self.again and exc.code in STALE:
                return WITHDRAWN
            return _refusal_of(self.event, exc, self.now) if self.event is not None else None
        offer = self.offer
        tx.execute(_OFFER, [offer.id, offer.task_id, offer.parent_id, offer.agent_id,
                            json.dumps(offer.stored_scope()), offer.max_uses,
                            json.dumps(list(offer.ancestors)),
                            json.dumps(list(offer.actor_chain)), offer.approved,
                            tx.time(offer.created_at), tx.time(offer.redeem_by),
                            tx.time(offer.expires_at)])
        return None

    def _check(self, tx: WriteCursor) -> None:
        _confirm_agent(tx, self.agent, self.request.agent_id, self.decided)
        _confirm_delegator(tx, self.agent, self.delegator, self.request.actor_chain)
        _confirm_lineage(tx, self.request, self.revisions)


def _confirm_agent(tx: WriteCursor, read: AgentRead, agent_id: str,
                   decided: DecidedOn | None, *, who: str = "agent") -> AgentBinding:
    """The agent as ``tx`` sees it: active, and in the trust state and at no higher risk
    than ``decided`` (if known); else raises the refusal (``who``: the agent's role in
    its messages)."""
    agent = read(tx, agent_id)
    state = agent.trust_state if agent is not None else None
    if agent is None or state not in ACTIVE_STATES:
        raise AgentError("agent_not_active", f"{who} `{agent_id}` is suspended or retired")
    if decided is not None and state != decided.state:
        raise GrantError("agent_changed", f"{who} is {state} now, not "
                         f"{decided.state} as the issuance was decided: ask again")
    if decided is not None and riskier(agent, decided.risk):
        raise GrantError("agent_changed", f"the {who}'s risk rose since the issuance was "
                         "decided: ask again")
    return agent


def _confirm_delegator(tx: WriteCursor, read: AgentRead, delegator: Delegator | None,
                       line: tuple[str, ...]) -> None:
    """An exchange's delegator (if any) as ``tx`` sees it: as its tools were decided for
    it (:func:`_confirm_agent`: a drift, review or risk committed since is
    ``agent_changed``, decided once more), its grant still usable by it (its key and
    manifest, as a use's write confirms them), and the child's line (``line``: the
    delegator and the agents its grant derives from) trusted and active
    (``delegator_not_trusted``, as a use of the child is refused); else raises the
    refusal."""
    if delegator is None:
        return
    agent = _confirm_agent(tx, read, delegator.agent_id, delegator.decided, who="delegator")
    refusal = binding_refusal(agent, delegator.key_thumbprint, delegator.manifest_digest) \
        or line_refusal(lambda agent_id: read(tx, agent_id), line)
    if refusal is not None:
        raise refusal


def _confirm_lineage(tx: WriteCursor, request: Request,
                     revisions: frozenset[int | None] | None) -> None:
    """Nothing in ``request``'s lineage revoked, and the policy revisions it was decided
    on (if confirmed) the active one, as ``tx`` sees them; else raises the refusal."""
    if any_revoked(tx, (request.parent_id, *request.lineage)):
        raise GrantError("grant_revoked", "the parent task or grant is revoked")
    if revisions is not None:
        active = active_revision(tx)
        if any(revision != active for revision in revisions):
            # none active now is not the revision decided on either: refused
            raise GrantError("policy_changed", f"policy revision {active} is active now, "
                             "not the one the issuance was decided on: ask again")


def _refusal_of(event: AuditEvent, refusal: GrantError, now: datetime) -> AuditEvent:
    """The event of an issuance whose write refused it (``refusal``, nothing stored),
    ``event`` the event of one of its decisions: the same agent, action, tool and task,
    denied, with the refusal's code and reason."""
    return AuditEvent(id=new_event_id(now), time=now, actor=event.actor, action=event.action,
                      target=event.target, outcome="denied", task=event.task,
                      delegation_chain=event.delegation_chain, source=event.source,
                      detail={"code": refusal.code, "reason": refusal.message[:500]})


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
