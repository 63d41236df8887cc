"""Issuing, exchanging, checking and revoking grants.

A grant is issued for a task only if policy allows the issuance
(``Action::"grant:issue"``, decided once per tool the scope covers). It is
bound to the agent's key (``cnf.jkt``) and every use carries a proof signed by
that key. Only the token's hash is stored; the grant is named by its accessor.

Order of one check, each failure a :class:`GrantError` with its code:
signature (cached per token) → issuer, audience, time → the agent's current key
is the bound key → proof (key, target, grant hash, freshness) → the call is in
scope → in one transaction: neither the grant, nor any ancestor, nor its task is
revoked, the proof nonce is new, a use is left. A failed check changes nothing.

The task is looked up too, not only the grant's own node: on PostgreSQL a grant
issued while its task was being ended may escape the subtree that ending
collected, but never the task's own revocation.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, delete, insert, select, update

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, decide_and_record, new_event_id
from proctor.clock import Clock
from proctor.errors import AuditError, GrantError, ScopeError
from proctor.grants.accounting import (
    check_max_uses,
    check_ttl,
    claim_nonce,
    reserve_uses,
    use_once,
)
from proctor.grants.leases import LeaseNode, LeaseTree
from proctor.grants.proofs import verify_proof
from proctor.grants.scope import GrantScope
from proctor.grants.tokens import GrantClaims, TokenCodec, token_hash
from proctor.human_ids import canonical_human_id
from proctor.identity.people import check_human
from proctor.policy import DecisionRequest, EntityRef, Outcome, PolicyEngine
from proctor.policy.context import issue_context
from proctor.store import Store, as_utc
from proctor.store.tables import grants, proof_nonces, tasks
from proctor.store.tables import leases as lease_table

__all__ = ["SYSTEM", "AgentBinding", "AgentDirectory", "CheckedGrant", "GrantAuthority",
           "IssuedGrant", "Task"]

log = logging.getLogger(__name__)

SYSTEM = Actor(ActorType.SYSTEM, "proctor")

EXCHANGE_METHOD = "grant/exchange"
ISSUE_METHOD = "grant/issue"


@dataclass(frozen=True, slots=True)
class AgentBinding:
    """What grants need to know of an agent: its registered key, and whether it is active.

    ``key_thumbprint`` is None for agents that prove themselves with a JWT-SVID or
    an OIDC token: each of their grants is bound to a key they present at issuance.
    """

    agent_id: str
    key_thumbprint: str | None
    is_active: bool


class AgentDirectory(Protocol):
    def binding(self, agent_id: str) -> AgentBinding | None: ...


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    agent_id: str
    purpose: str
    on_behalf_of: str
    started_at: datetime
    ended_at: datetime | None
    sensitivity_seen: int = 0  # rank of the highest data label an allowed call has read


@dataclass(frozen=True, slots=True)
class IssuedGrant:
    token: str
    accessor: str
    claims: GrantClaims

    @property
    def grant_id(self) -> str:
        return self.claims.grant_id


@dataclass(frozen=True, slots=True)
class CheckedGrant:
    """A use that passed every check. ``accessor`` is known when a tool call was checked."""

    claims: GrantClaims
    uses_left: int | None
    accessor: str | None = None


class GrantAuthority:
    """The grants part's one entry point."""

    def __init__(self, store: Store, clock: Clock, codec: TokenCodec, engine: PolicyEngine,
                 agents: AgentDirectory, *, audit: AuditLog | None = None,
                 max_depth: int = 3) -> None:
        self._store = store
        self._clock = clock
        self._codec = codec
        self._engine = engine
        self._agents = agents
        self._audit = audit
        self.leases = LeaseTree(store, clock)
        self.max_depth = max_depth

    # tasks

    def start_task(self, agent_id: str, *, purpose: str, on_behalf_of: str) -> Task:
        """Start a task of ``agent_id`` for the human ``on_behalf_of`` (kept in its
        canonical form, as policies and approvals compare it)."""
        on_behalf_of = check_human(on_behalf_of, "human a task acts for")
        agent_id = self._active_agent(agent_id).agent_id  # as registered
        task = Task(f"task_{secrets.token_hex(8)}", agent_id, purpose, on_behalf_of,
                    self._clock.now(), None)
        with self._store.transaction() as conn:
            conn.execute(insert(tasks).values(
                id=task.id, agent_id=agent_id, purpose=purpose, on_behalf_of=on_behalf_of,
                started_at=task.started_at))
            self.leases.add(conn, node_id=task.id, parent_id=None, kind="task",
                            task_id=task.id, agent_id=agent_id, expires_at=None)
        return task

    def task(self, task_id: str) -> Task:
        with self._store.reading() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise GrantError("task_unknown", f"task `{task_id}` does not exist")
        return Task(row.id, row.agent_id, row.purpose, canonical_human_id(row.on_behalf_of),
                    as_utc(row.started_at), as_utc(row.ended_at) if row.ended_at else None,
                    int(row.sensitivity_seen))

    def note_sensitivity(self, task_id: str, level: int) -> None:
        """Raise the task's highest data sensitivity seen to ``level`` (never lower it)."""
        with self._store.transaction() as conn:
            conn.execute(update(tasks).where(and_(
                tasks.c.id == task_id, tasks.c.sensitivity_seen < level))
                .values(sensitivity_seen=level))

    def end_task(self, task_id: str, *, by: Actor = SYSTEM) -> list[str]:
        """End the task and revoke everything issued under it."""
        self.task(task_id)
        mark_ended = (update(tasks).where(and_(tasks.c.id == task_id, tasks.c.ended_at.is_(None)))
                      .values(ended_at=self._clock.now()))
        revoked = self.leases.revoke_subtree([task_id], "task ended",
                                             also=lambda conn: conn.execute(mark_ended))
        self._record("task.end", f'Task::"{task_id}"', task_id, "task ended", revoked, by)
        return revoked

    # issuing

    def issue(self, task_id: str, scope: GrantScope, *, ttl_seconds: int | None = None,
              max_uses: int | None = None, holder_proof: str | None = None,
              approved: bool = False) -> IssuedGrant:
        """Issue a grant for the task's agent, if policy allows each tool of ``scope``.

        The grant is bound to the agent's registered key. Agents without one (JWT-SVID,
        OIDC) send ``holder_proof``: a proof (``method`` ``grant/issue``, ``target`` the
        issuer, no grant hash) signed by the key the grant is to be bound to.
        """
        task = self.task(task_id)
        if task.ended_at is not None:
            raise GrantError("task_ended", f"task `{task_id}` has ended")
        check_max_uses(max_uses)
        jkt = self._holder_key(self._active_agent(task.agent_id), holder_proof)
        ttl = check_ttl(ttl_seconds)
        now = self._clock.now()
        self._decide_issuance(task, task.agent_id, scope, ttl, max_uses, (), approved, now)
        claims = self._claims(task, task.agent_id, jkt, scope, now, ttl, (), ())
        return self._store_grant(claims, parent_id=task.id, max_uses=max_uses)

    def exchange(self, parent_token: str, proof: str, *, to_agent: str, scope: GrantScope,
                 ttl_seconds: int | None = None, max_uses: int | None = None,
                 holder_proof: str | None = None, approved: bool = False) -> IssuedGrant:
        """Delegation: trade a grant (with its proof) for a narrower one for ``to_agent``."""
        parent = self.check(parent_token, proof, method=EXCHANGE_METHOD,
                            target=self._codec.issuer, tool_id=None, args=None).claims
        if not parent.scope.covers(scope):
            raise GrantError("delegation_widens_scope",
                             "the requested scope is wider than the parent grant's")
        now = self._clock.now()
        ttl = check_ttl(ttl_seconds)
        if int(now.timestamp()) + ttl > parent.expires_at:
            raise GrantError("delegation_extends_expiry",
                             "a child grant cannot outlive its parent")
        if parent.depth + 1 > self.max_depth:
            raise GrantError("delegation_too_deep",
                             f"delegation is limited to depth {self.max_depth}")
        chain = (parent.agent_id, *parent.actor_chain)
        check_max_uses(max_uses)
        receiver = self._active_agent(to_agent)
        to_agent = receiver.agent_id  # as registered
        if to_agent in chain:
            raise GrantError("delegation_cycle",
                             f"`{to_agent}` already holds this grant or one it derives from")
        jkt = self._holder_key(receiver, holder_proof)
        task = self.task(parent.task_id)
        self._decide_issuance(task, to_agent, scope, ttl, max_uses, chain[::-1], approved, now)
        claims = self._claims(task, to_agent, jkt, scope, now, ttl,
                              (parent.grant_id, *parent.ancestors), chain)
        return self._store_grant(claims, parent_id=parent.grant_id, max_uses=max_uses,
                                 reserve_from_parent=True)

    # checking

    def check(self, token: str, proof: str, *, method: str, target: str,
              tool_id: str | None, args: Mapping[str, Any] | None) -> CheckedGrant:
        """Check one use of a grant; ``tool_id`` None checks the grant without a tool call."""
        now = self._clock.now()
        claims = self._codec.decode(token, now=now)
        self._check_binding(claims)
        verified = verify_proof(proof, token=token, key_thumbprint=claims.key_thumbprint,
                                method=method, target=target, now=now)
        try:
            if tool_id is not None and not claims.scope.allows(tool_id, args or {}):
                raise GrantError("grant_out_of_scope", f"tool `{tool_id}` with these "
                                 "arguments is outside the grant's scope")
            with self._store.transaction() as conn:
                if self.leases.revoked_among(conn, claims.lineage):
                    raise GrantError("grant_revoked",
                                     "the grant or one it derives from is revoked")
                claim_nonce(conn, verified.nonce, now)
                if tool_id is None:
                    return CheckedGrant(claims, None)
                uses_left, accessor = use_once(conn, claims.grant_id)
        except GrantError as exc:
            if exc.code != "proof_replayed":  # a replay may be anyone's: name no one
                exc.holder = claims  # the caller proved the grant's key: the refusal is theirs
            raise
        return CheckedGrant(claims, uses_left, accessor)

    def inspect(self, token: str) -> GrantClaims:
        """Verify a grant's signature, claims and revocation state without using it.

        For operators and introspection; an agent's use always goes through :meth:`check`.
        """
        claims = self._codec.decode(token, now=self._clock.now())
        self._check_binding(claims)
        if self.leases.revoked_now(claims.lineage):
            raise GrantError("grant_revoked", "the grant or one it derives from is revoked")
        return claims

    # revoking

    def revoke(self, grant_or_accessor: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke a grant (by id or accessor) and everything derived from it."""
        with self._store.transaction() as conn:
            row = conn.execute(
                select(grants.c.id, grants.c.accessor, lease_table.c.task_id)
                .join(lease_table, lease_table.c.id == grants.c.id)
                .where((grants.c.id == grant_or_accessor)
                       | (grants.c.accessor == grant_or_accessor))
            ).first()
        if row is None:
            shown = "(a token)" if grant_or_accessor.count(".") == 2 else grant_or_accessor[:80]
            raise GrantError("grant_unknown", f"grant `{shown}` does not exist: revoke takes "
                             "the accessor or the grant id")
        revoked = self.leases.revoke_subtree([row.id], reason)
        self._record("grant.revoke", row.accessor, row.task_id, reason, revoked, by)
        return revoked

    def revoke_agent(self, agent_id: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke every grant held by ``agent_id`` (and all derived from them)."""
        with self._store.transaction() as conn:
            ids = [r.id for r in conn.execute(select(lease_table.c.id).where(and_(
                lease_table.c.agent_id == agent_id, lease_table.c.kind == "grant",
                lease_table.c.revoked_at.is_(None)))).all()]
        revoked = self.leases.revoke_subtree(ids, reason) if ids else []
        self._record("agent.revoke_grants", f'Agent::"{agent_id}"', "", reason, revoked, by)
        return revoked

    def _record(self, action: str, target: str, task: str, reason: str,
                revoked: Sequence[str], by: Actor) -> None:
        """Audit a revocation. It has already taken effect: an audit failure is logged
        loudly, never turned into an un-revocation."""
        if self._audit is None:
            return
        now = self._clock.now()
        event = AuditEvent(id=new_event_id(now), time=now, actor=by, action=action,
                           target=target, outcome="revoked", task=task,
                           detail={"reason": reason, "revoked": len(revoked)})
        try:
            self._audit.record(event)
        except AuditError:
            log.error("revocation %s of %s took effect but could not be audited", action,
                      target)

    def sweep(self) -> tuple[int, int]:
        """Revoke expired leases and forget proof nonces past their window; returns how
        many of each. Meant to run periodically (nothing schedules it yet)."""
        expired = self.leases.sweep_expired()
        with self._store.transaction() as conn:
            forgotten = conn.execute(
                delete(proof_nonces).where(proof_nonces.c.expires_at < self._clock.now())
            ).rowcount
        return expired, int(forgotten)

    def tree(self, task_id: str) -> list[LeaseNode]:
        return self.leases.subtree(task_id)

    # internals

    def _check_binding(self, claims: GrantClaims) -> None:
        binding = self._agents.binding(claims.agent_id)
        if binding is None or binding.key_thumbprint not in (None, claims.key_thumbprint):
            raise GrantError("grant_wrong_agent", "the grant's agent or key is no longer valid")
        if not binding.is_active:
            raise GrantError("agent_not_active", "the grant's agent is suspended or retired")

    def _active_agent(self, agent_id: str) -> AgentBinding:
        binding = self._agents.binding(agent_id)
        if binding is None:
            raise GrantError("agent_unknown", f"agent `{agent_id}` is not registered")
        if not binding.is_active:
            raise GrantError("agent_not_active", f"agent `{agent_id}` is suspended or retired")
        return binding

    def _holder_key(self, binding: AgentBinding, holder_proof: str | None) -> str:
        """The thumbprint a new grant binds to; a presented key must be proven."""
        if holder_proof is None:
            if binding.key_thumbprint is None:
                raise GrantError("proof_missing", f"agent `{binding.agent_id}` has no registered"
                                 " key: a proof with the key to bind the grant to is required")
            return binding.key_thumbprint
        now = self._clock.now()
        proof = verify_proof(holder_proof, token=None, key_thumbprint=binding.key_thumbprint,
                             method=ISSUE_METHOD, target=self._codec.issuer, now=now)
        with self._store.transaction() as conn:
            claim_nonce(conn, proof.nonce, now)
        return proof.key_thumbprint

    def _decide_issuance(self, task: Task, agent_id: str, scope: GrantScope, ttl: int,
                         max_uses: int | None, chain: Sequence[str], approved: bool,
                         now: datetime) -> None:
        tools = [t.tool_id for t in self._engine.catalog
                 if any(entry.matches_tool(t.tool_id) for entry in scope.tools)]
        unmatched = [e.tool for e in scope.tools
                     if not any(e.matches_tool(t) for t in tools)]
        if unmatched:
            raise ScopeError(f"scope entry `{unmatched[0]}` matches no known tool")
        context = issue_context(now=now, task=task.id, purpose=task.purpose,
                                on_behalf_of=task.on_behalf_of, ttl_seconds=ttl,
                                max_uses=max_uses, delegation_chain=chain, approved=approved)
        for tool in tools:
            request = DecisionRequest(EntityRef("Agent", agent_id), "grant:issue",
                                      EntityRef("Tool", tool), context)
            decision = (decide_and_record(self._engine, self._audit, request)
                        if self._audit is not None else self._engine.decide(request))
            if decision.outcome is Outcome.APPROVAL_REQUIRED:
                raise GrantError("issuance_pending_approval",
                                 f"issuing `{tool}` needs approval: {'; '.join(decision.reasons)}")
            if decision.outcome is not Outcome.ALLOW:
                raise GrantError("issuance_denied",
                                 f"issuing `{tool}` is denied: {'; '.join(decision.reasons)}")

    def _claims(self, task: Task, agent_id: str, key_thumbprint: str, scope: GrantScope,
                now: datetime, ttl: int, ancestors: tuple[str, ...],
                chain: tuple[str, ...]) -> GrantClaims:
        t = int(now.timestamp())
        return GrantClaims(
            grant_id=f"grant_{secrets.token_hex(12)}", agent_id=agent_id, task_id=task.id,
            issuer=self._codec.issuer, audience=self._codec.audience, issued_at=t,
            not_before=t, expires_at=t + ttl, scope=scope,
            key_thumbprint=key_thumbprint, ancestors=ancestors, actor_chain=chain,
        )

    def _store_grant(self, claims: GrantClaims, *, parent_id: str, max_uses: int | None,
                     reserve_from_parent: bool = False) -> IssuedGrant:
        token = self._codec.encode(claims)
        accessor = f"acc_{secrets.token_hex(12)}"
        expires = datetime.fromtimestamp(claims.expires_at, tz=self._clock.now().tzinfo)
        with self._store.transaction() as conn:
            if self.leases.revoked_among(conn, [parent_id]):
                raise GrantError("grant_revoked", "the parent task or grant is revoked")
            if reserve_from_parent:
                reserve_uses(conn, parent_id, max_uses)
            self.leases.add(conn, node_id=claims.grant_id, parent_id=parent_id, kind="grant",
                            task_id=claims.task_id, agent_id=claims.agent_id,
                            expires_at=expires)
            conn.execute(insert(grants).values(
                id=claims.grant_id, accessor=accessor, token_hash=token_hash(token),
                scope=claims.scope.as_json(), max_uses=max_uses, uses=0))
        return IssuedGrant(token, accessor, claims)
