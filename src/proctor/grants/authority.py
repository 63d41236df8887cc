"""Issuing, exchanging, checking and revoking grants.

A grant is issued for a task only if policy allows the issuance
(``Action::"grant:issue"``, decided once per tool the scope covers), and covers
exactly those tools: a wildcard in a request is expanded at issuance, so a tool
that appears later is outside every grant issued before it. A grant is bound to
a key its agent proved (``cnf.jkt``; :mod:`proctor.grants.holders`) and every
use carries a proof signed by that key. Only the token's hash is stored; the
grant is named by its accessor. How grants are made: :mod:`proctor.grants.issuance`;
how they are revoked (by grant, by agent) and audited: :mod:`proctor.grants.revoking`.

Order of one check, each failure a :class:`GrantError` with its code:
signature (cached per token) → issuer, audience, time → the agent's current key
is the bound key → proof (key, target, grant hash, freshness) → the call is in
scope (:meth:`GrantAuthority.prepare`) → in one transaction, the decision's own
(:mod:`proctor.grants.use`): neither the grant, nor any ancestor, nor its task is
revoked, the agent is active, the task is neither ended nor past its lifetime or
idle timeout, the proof nonce is new, a use is left. A failed check changes nothing.
A grant held by the deciding process itself (:meth:`GrantAuthority.hold`, the stdio
wrapper's) skips the proof and its nonce: its key was checked once when it was held
(:mod:`proctor.grants.holders`).

The task is looked up too, not only the grant's own node: on PostgreSQL a grant
issued while its task was being ended may escape the subtree that ending
collected, but never the task's own revocation.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import insert, select

from proctor.audit import Actor, AuditEvent, AuditLog, WriteCursor
from proctor.clock import Clock
from proctor.errors import AgentError, GrantError, StoreError
from proctor.grants.accounting import (
    ProofSpent,
    check_max_uses,
    check_ttl,
    claim_nonce,
    forget_nonces,
    nonce_kept_until,
    nonce_key,
    nonce_spent,
    uses_left_of,
)
from proctor.grants.agents import (
    DELEGATOR_MAX_RISK,
    AgentBinding,
    AgentDirectory,
    AgentEnded,
    binding_refusal,
    line_refusal,
)
from proctor.grants.holders import HeldGrant, HolderProof, held_with
from proctor.grants.issuance import (
    ISSUE_METHOD,
    STALE,
    Decided,
    EnsureCurrent,
    IssuedGrant,
    Issuer,
    ParentGrant,
    UnstoredGrant,
)
from proctor.grants.leases import LeaseNode, LeaseTree
from proctor.grants.offers import GrantOffer, cancel_offer, load_offer
from proctor.grants.proofs import PrivateKey, VerifiedProof, verify_proof
from proctor.grants.requests import Request
from proctor.grants.revoking import SYSTEM, Revoker
from proctor.grants.scope import GrantScope, expand_scope, wildcards_of
from proctor.grants.tasks import Task, TaskLimits, due_tasks, task_from_row
from proctor.grants.tokens import GrantClaims, TokenCodec
from proctor.grants.use import GrantUse
from proctor.grants.view import RevocationView, TaskView
from proctor.identity.people import check_human
from proctor.identity.request_proofs import ProofUse
from proctor.policy import PolicyEngine
from proctor.policy.known_tools import KnownTools
from proctor.store import Store
from proctor.store.drivers import driver_errors
from proctor.store.tables import tasks

__all__ = ["EXCHANGE_METHOD", "ISSUE_METHOD", "SYSTEM", "AgentBinding", "AgentDirectory",
           "AgentEnded", "CheckedGrant", "GrantAuthority", "GrantUse", "IssuedGrant", "Swept",
           "Task"]

log = logging.getLogger(__name__)

_MAX_HELD = 100_000

EXCHANGE_METHOD = "grant/exchange"


@dataclass(frozen=True, slots=True)
class CheckedGrant:
    """A use that passed every check. ``accessor`` is known when a tool call was checked."""

    claims: GrantClaims
    uses_left: int | None
    accessor: str | None = None


class Swept(NamedTuple):
    """What one sweep did: leases expired, proof nonces forgotten, tasks ended."""

    expired: int
    nonces: int
    tasks: int = 0


class GrantAuthority:
    """The grants part's one entry point."""

    def __init__(self, store: Store, clock: Clock, codec: TokenCodec, engine: PolicyEngine,
                 agents: AgentDirectory, *, audit: AuditLog | None = None,
                 max_depth: int = 3, task_limits: TaskLimits | None = None,
                 tools: KnownTools | None = None, tasks: TaskView | None = None,
                 revocations: RevocationView | None = None,
                 delegator_max_risk: int = DELEGATOR_MAX_RISK) -> None:
        self._store = store
        self._clock = clock
        self._codec = codec
        self._engine = engine
        self._agents = agents
        self._audit = audit
        self.leases = LeaseTree(store, clock)
        self.max_depth = max_depth
        self.task_limits = task_limits or TaskLimits()
        # the risk from which an agent lends nothing it handed on (each use, each hand-on)
        self.delegator_max_risk = delegator_max_risk
        self._issuer = Issuer(store, clock, codec, engine, agents, self.leases, audit, tools,
                              max_risk=delegator_max_risk)
        self._tasks = tasks
        self._revocations = revocations
        self._limits: dict[str, tuple[int | None, str]] = {}  # max uses, accessor: fixed
        # The registry's own suspension or retirement revokes every grant the agent holds
        # in that same transaction (no event: the CLI, API and console suspend through
        # oversight.standing, which revokes in the audit writer's transaction instead).
        self._revoker = Revoker(store, clock, self.leases, audit)
        agents.on_deactivated(self._revoker.end_agent_grants)

    def decide_on_current(self, ensure_current: EnsureCurrent, *,
                          sync_policies: Callable[[], object] | None = None,
                          forget_agent: Callable[[str], None] | None = None) -> None:
        """Call ``ensure_current(agent_id, strict=...)`` before policy decides an issuance
        for the agent (issued, offered, redeemed, exchanged or a later tool), so that it
        decides on the agent as stored now, not as the engine last saw it: from the
        store (``strict``), or from memory for a grant whose write confirms the trust
        state it returns.

        ``sync_policies`` loads the active policy revision into the engine: with it, a
        grant's write also confirms the revision it was decided on (``policy_changed``).
        ``forget_agent`` drops an agent's entry from the process's view. A grant issued
        or exchanged that its write refuses for either (``agent_changed``,
        ``policy_changed``) has them called, and is decided once more."""
        self._issuer.ensure_current = ensure_current
        self._issuer.sync_policies = sync_policies
        self._issuer.forget_agent = forget_agent

    # tasks

    def start_task(self, agent_id: str, *, purpose: str, on_behalf_of: str,
                   ttl_seconds: int | None = None, idle_seconds: int | None = None) -> Task:
        """Start a task for the agent; it ends by itself after ``ttl_seconds`` or after
        ``idle_seconds`` without a call (the deployment's limits by default)."""
        task = self.new_task(agent_id, purpose=purpose, on_behalf_of=on_behalf_of,
                             ttl_seconds=ttl_seconds, idle_seconds=idle_seconds)
        with self._store.transaction() as conn:
            conn.execute(insert(tasks).values(**task_columns(task)))
            self.leases.add(conn, node_id=task.id, parent_id=None, kind="task",
                            task_id=task.id, agent_id=task.agent_id, expires_at=task.expires_at)
        return task

    def new_task(self, agent_id: str, *, purpose: str, on_behalf_of: str,
                 ttl_seconds: int | None = None, idle_seconds: int | None = None) -> Task:
        """The task :meth:`start_task` starts, checked (the human, the agent active now,
        the limits), not stored yet (:mod:`proctor.oversight.starting` stores it with its
        event)."""
        on_behalf_of = check_human(on_behalf_of, "human a task acts for")
        agent_id = self._active_agent(agent_id).agent_id  # as registered
        ttl, idle = self.task_limits.resolve(ttl_seconds, idle_seconds)
        now = self._clock.now()
        return Task(f"task_{secrets.token_hex(8)}", agent_id, purpose, on_behalf_of, now, None,
                    0, now + timedelta(seconds=ttl), idle, now + timedelta(seconds=idle))

    def task(self, task_id: str) -> Task:
        """The task; from the in-process view when there is one (its idle deadline as
        of when it was read: :meth:`_lapse` reads a passed one again)."""
        if self._tasks is not None:
            return self._tasks.task(task_id)
        with self._store.reading() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            raise GrantError("task_unknown", f"task `{task_id}` does not exist")
        return task_from_row(row)

    def end_task(self, task_id: str, *, by: Actor = SYSTEM,
                 reason: str = "task ended") -> list[str]:
        """End the task and revoke everything issued under it."""
        self.task(task_id)
        revoked = self._revoker.end_task(task_id, reason, by=by)
        if self._tasks is not None:
            self._tasks.forget(task_id)
        return revoked

    # issuing

    def issue(self, task_id: str, scope: GrantScope, *, ttl_seconds: int | None = None,
              max_uses: int | None = None, holder: HolderProof | None = None,
              approved: bool = False, same_key_as: str | None = None,
              agent_id: str | None = None, requested: AuditEvent | None = None
              ) -> IssuedGrant:
        """Issue a grant for the task's agent, if policy allows each tool of ``scope``.

        The grant is bound to the agent's registered key. An agent without one sends
        ``holder``: its identity proof and a proof of the key to bind the grant to;
        anyone else asks for an :meth:`offer` the agent redeems. ``same_key_as`` (for
        grants never handed out) binds to the key of an earlier grant of the task;
        with it, ``agent_id`` issues for that grant's agent, which may be one the task's
        grant was delegated to ("approve similar" of its calls). ``requested``: the event
        of the human who asked for it, written with the grant (its target, outcome, task
        and ``detail.agent`` filled in then), or neither is.
        """
        self._check_same_key(task_id, same_key_as, agent_id)

        def issued(again: GrantError | None) -> IssuedGrant:
            request, key, proof, decided = self._issuance(
                task_id, scope, ttl_seconds, max_uses, approved, holder, same_key_as,
                agent_id, again)
            return self._issuer.grant(request, key, proof, decided=decided,
                                      requested=requested)
        return _once_more(issued)

    def issue_with(self, task_id: str, scope: GrantScope, write: Callable[[UnstoredGrant], _T],
                   *, ttl_seconds: int | None = None, max_uses: int | None = None,
                   approved: bool = False, same_key_as: str | None = None,
                   agent_id: str | None = None) -> tuple[IssuedGrant, _T]:
        """:meth:`issue` (a grant never handed out: ``same_key_as``), stored by the
        caller's own write: ``write(unstored)`` writes, in one transaction of the audit
        writer, what stands only with the grant and the grant itself (``unstored.new``,
        applied first among its effects: what it refuses, nothing of that write may
        stand) with the issuance's events (``unstored.events``), and raises
        ``unstored.new.refusal`` if the grant was refused. A grant refused as decided on
        what another process had changed meanwhile is decided, and written, once more.
        What ``write`` returned, with the grant, once it has committed."""
        self._check_same_key(task_id, same_key_as, agent_id)

        def written(again: GrantError | None) -> tuple[IssuedGrant, _T]:
            request, key, proof, decided = self._issuance(
                task_id, scope, ttl_seconds, max_uses, approved, None, same_key_as,
                agent_id, again)
            unstored = self._issuer.unstored(request, key, proof, decided)
            try:
                result = write(unstored)
                if unstored.new.refusal is not None:
                    raise unstored.new.refusal
            except GrantError as exc:
                if exc is unstored.new.refusal:
                    self._issuer.renew(exc.code, request.agent_id)
                raise
            return unstored.issued, result
        return _once_more(written)

    def _check_same_key(self, task_id: str, same_key_as: str | None,
                        agent_id: str | None) -> None:
        if agent_id is not None:
            node = self.leases.node(same_key_as) if same_key_as is not None else None
            if node is None or (node.kind, node.agent_id, node.task_id) != (
                    "grant", agent_id, task_id):
                raise GrantError("holder_identity_missing", "a grant for another agent than "
                                 "the task's is bound to the key of a grant of that agent "
                                 "in the task")

    def _issuance(self, task_id: str, scope: GrantScope, ttl_seconds: int | None,
                  max_uses: int | None, approved: bool, holder: HolderProof | None,
                  same_key_as: str | None, agent_id: str | None, again: GrantError | None
                  ) -> tuple[Request, str, VerifiedProof | None, Decided]:
        """An issuance decided: its request, the key and the proof it binds to, the
        decisions (their events unwritten)."""
        with self._one_look():
            request, binding, ttl = self._for_task(
                task_id, scope, ttl_seconds, max_uses, approved,
                seen=self._issuer.confirms_agent, agent_id=agent_id)
            key, proof = self._issuer.proven_key(binding.agent_id, binding.key_thumbprint,
                                                 holder, same_key_as=same_key_as,
                                                 task_id=task_id)
            decided = self._issuer.decide_unwritten(
                request, ttl_seconds=ttl, again=True if again is None else again)
        return request, key, proof, decided

    def _one_look(self) -> contextlib.AbstractContextManager[None]:
        """One look at the change feed for an issuance's reads (its task, its agent, the
        agent as policy decides on it): read as of one moment, at the cost of one look
        rather than one per view. The grant's write confirms what must be current (the
        agent's trust state, nothing in the lineage revoked:
        :class:`~proctor.grants.issuance.NewGrant`); the write itself runs outside, so
        that other callers' effects it applies look for themselves."""
        return self._tasks.one_look() if self._tasks is not None else contextlib.nullcontext()

    def offer(self, task_id: str, scope: GrantScope, *, ttl_seconds: int | None = None,
              max_uses: int | None = None, approved: bool = False,
              requested: AuditEvent | None = None) -> GrantOffer:
        """Decide a grant for the task's agent now; the agent redeems it (:meth:`redeem`)
        with a proof of the key to bind it to. ``requested``: as :meth:`issue`'s."""
        def offered(again: GrantError | None) -> GrantOffer:
            request, _, ttl = self._for_task(task_id, scope, ttl_seconds, max_uses, approved)
            # its events go with the offer's write (NewOffer)
            return self._issuer.offer(request, self._issuer.decide_unwritten(
                request, ttl_seconds=ttl, again=True if again is None else again),
                requested=requested)
        return _once_more(offered)

    def _for_task(self, task_id: str, scope: GrantScope, ttl_seconds: int | None,
                  max_uses: int | None, approved: bool, *, seen: bool = False,
                  agent_id: str | None = None) -> tuple[Request, AgentBinding, int]:
        """The request for a grant under ``task_id`` for its agent (or ``agent_id``);
        ``seen``: the agent as this process's view has it, for a grant whose write
        confirms it (``NewGrant``)."""
        task = self._open_task(task_id)
        check_max_uses(max_uses)
        binding = self._active_agent(agent_id or task.agent_id, seen=seen)
        ttl = check_ttl(ttl_seconds)
        expanded = expand_scope(scope, self._issuer.covered_tools(scope))
        expires = int(self._clock.now().timestamp()) + ttl
        return (Request(task, binding.agent_id, expanded, expires, max_uses, task.id,
                        approved=approved, wildcards=wildcards_of(scope),
                        manifest_digest=binding.manifest_digest,
                        agent_key=binding.key_thumbprint), binding, ttl)

    def exchange(self, parent_token: str, proof: str, *, to_agent: str, scope: GrantScope,
                 ttl_seconds: int | None = None, max_uses: int | None = None,
                 approved: bool = False, requested: AuditEvent | None = None
                 ) -> IssuedGrant | GrantOffer:
        """Delegation: trade a grant (with its proof) for a narrower one for ``to_agent``,
        decided for ``to_agent`` and for the delegator as it is now (each audited).

        An agent with a registered key gets its grant at once; one without gets an
        offer, which only it can redeem (the delegator never chooses its key).
        ``requested``: as :meth:`issue`'s.
        """
        parent = self.check(parent_token, proof, method=EXCHANGE_METHOD,
                            target=self._codec.issuer, tool_id=None, args=None).claims
        # the parent's check (its proof's nonce) once; the rest once more if stale
        return _once_more(lambda again: self._delegated(parent, to_agent, scope, ttl_seconds,
                                                        max_uses, approved, again, requested))

    def _delegated(self, parent: GrantClaims, to_agent: str, scope: GrantScope,
                   ttl_seconds: int | None, max_uses: int | None,
                   approved: bool, again: GrantError | None,
                   requested: AuditEvent | None = None) -> IssuedGrant | GrantOffer:
        """:meth:`exchange` once the parent grant was checked."""
        with self._one_look():  # its reads as an issuance's (the check's are its own)
            # a wildcard asks for whatever of the parent's tools it matches
            known = self._issuer.known_tools(parent.scope, scope)
            of_parent = [t for t in known if parent.scope.names(t)]
            for entry in scope.tools:
                if not any(entry.matches_tool(t) for t in of_parent) \
                        and any(entry.matches_tool(t) for t in known):
                    raise GrantError("delegation_widens_scope",
                                     f"`{entry.tool}` is not in the parent grant's scope")
            wanted = expand_scope(scope, of_parent)
            if not parent.scope.covers(wanted):
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
            receiver, refused = self._receiver(to_agent)
            if receiver is not None and receiver.agent_id in chain:
                raise GrantError("delegation_cycle", f"`{receiver.agent_id}` already holds this "
                                 "grant or one it derives from")
            task = self._open_task(parent.task_id)
            if receiver is None:  # decided and written as policy's refusal is, told as one
                self._issuer.refuse_receiver(Request(
                    task, to_agent, wanted, int(now.timestamp()) + ttl, max_uses,
                    parent.grant_id, (parent.grant_id, *parent.ancestors), chain, approved),
                    ttl, refused)
                raise _not_handed_on(to_agent)
            # a wildcard stays open to later tools only where the parent's was
            inherited = wildcards_of(GrantScope(tuple(
                e for e in scope.tools if e.is_wildcard and parent.wildcards is not None
                and any(mine.covers(e) for mine in parent.wildcards.tools))))
            request = Request(task, receiver.agent_id, wanted, int(now.timestamp()) + ttl,
                              max_uses, parent.grant_id, (parent.grant_id, *parent.ancestors),
                              chain, approved, inherited, receiver.manifest_digest,
                              receiver.key_thumbprint,
                              (parent.manifest_digest, *parent.line_manifests))
            key = receiver.key_thumbprint
            try:
                decided = self._issuer.decide_unwritten(
                    request, ttl_seconds=ttl, again=True if again is None else again)
            except GrantError as exc:  # written with its reasons; told as an unknown's
                if exc.code != "issuance_denied":
                    raise
                raise _not_handed_on(to_agent) from None
        # the delegator hands on no more than policy would issue it now (audited; the
        # child's write confirms it as decided on here)
        decided = self._issuer.decide_delegated(decided, request, ParentGrant.of(parent),
                                                ttl_seconds=ttl, again=again)
        if key is None:  # an offer: its events go with its write
            return self._issuer.offer(request, decided, requested=requested)
        return self._issuer.grant(request, key, None, decided=decided, requested=requested)

    def _receiver(self, to_agent: str) -> tuple[AgentBinding | None, str]:
        """The agent an exchange hands on to, or None and why not: an id no agent has and
        an agent suspended or retired are refused as one policy refuses
        (:meth:`~proctor.grants.deciding._Deciding.refuse_receiver`, :func:`_not_handed_on`)."""
        try:
            return self._active_agent(to_agent, seen=self._issuer.confirms_agent), ""
        except AgentError as exc:
            return None, exc.message

    def redeem(self, offer_id: str, holder: HolderProof, *,
               requested: AuditEvent | None = None) -> IssuedGrant:
        """Turn an offer into a grant for its agent, bound to the key ``holder`` proves
        together with the agent's own identity proof. Decided again, audited (once more
        if its write found another policy revision active: ``policy_changed``); an
        exchange's offer for its delegator too, exactly as the exchange was
        (:meth:`~proctor.grants.issuance.Issuer.decide_delegated`: the delegator's state
        now, confirmed by the grant's write). ``requested``: as :meth:`issue`'s."""
        return _once_more(lambda again: self._redeemed(offer_id, holder, again, requested))

    def _redeemed(self, offer_id: str, holder: HolderProof, again: GrantError | None,
                  requested: AuditEvent | None = None) -> IssuedGrant:
        with self._store.reading() as conn:
            offer = load_offer(conn, offer_id)
        refused = offer.refusal(self._clock.now())
        if refused is not None:
            raise refused
        binding = self._active_agent(offer.agent_id)
        key, proof = self._issuer.proven_key(binding.agent_id, binding.key_thumbprint, holder)
        task = self._open_task(offer.task_id)
        request = Request(task, offer.agent_id, offer.scope, int(offer.expires_at.timestamp()),
                          offer.max_uses, offer.parent_id, offer.ancestors, offer.actor_chain,
                          offer.approved, offer.wildcards, binding.manifest_digest,
                          agent_key=binding.key_thumbprint,
                          actor_manifests=offer.actor_manifests)
        ttl = max(1, request.expires_at - int(self._clock.now().timestamp()))
        # its events go with the grant's write, which takes the offer (NewGrant)
        decided = self._issuer.decide_unwritten(
            request, ttl_seconds=ttl, again=True if again is None else again)
        if offer.is_delegated:  # decided for the delegator again, as the exchange was
            decided = self._issuer.decide_delegated(decided, request, _parent_of(offer),
                                                    ttl_seconds=ttl, again=again)
        return self._issuer.grant(request, key, proof, offer=offer, decided=decided,
                                  requested=requested)

    def cancel_offer(self, offer_id: str, reason: str) -> bool:
        """Cancel an offer not redeemed yet; False if it was redeemed or cancelled."""
        with self._store.transaction() as conn:
            return cancel_offer(conn, offer_id, reason, self._clock.now())

    def offer_of(self, offer_id: str) -> GrantOffer:
        with self._store.reading() as conn:
            return load_offer(conn, offer_id)

    # checking

    def check(self, token: str, proof: str, *, method: str, target: str,
              tool_id: str | None, args: Mapping[str, Any] | None) -> CheckedGrant:
        """Check one use of a grant; ``tool_id`` None checks the grant without a tool call.

        The use is written on its own (group-committed by the audit writer, if there is
        one); a decision writes it with its audit event instead (:meth:`prepare`).
        """
        try:
            use = self.prepare(token, proof, method=method, target=target, tool_id=tool_id,
                               args=args)
        except GrantError as exc:
            if isinstance(exc.spent, ProofSpent):  # its proof verified: spent all the same
                self._written(exc.spent)
                if exc.spent.refusal is not None:
                    raise exc.spent.refusal from None
            raise
        self._written(use)
        self.raise_refusal(use)
        return CheckedGrant(use.claims, use.uses_left, use.accessor)

    def _written(self, effects: GrantUse | ProofSpent) -> None:
        if self._audit is not None:  # group-committed with the decisions
            self._audit.record_with(None, effects)
        else:
            self.apply_alone(effects)

    def prepare(self, token: str, proof: str, *, method: str, target: str,
                tool_id: str | None, args: Mapping[str, Any] | None) -> GrantUse:
        """Every check of a use that needs no write (signature, claims, the agent's key,
        the proof, the scope); the rest is the returned :class:`GrantUse`, written in the
        same transaction as the decision's audit event (:meth:`AuditLog.record_with`)."""
        now = self._clock.now()
        claims = self._codec.decode(token, now=now)
        self._check_binding(claims, confirmed_later=True)
        verified = verify_proof(proof, token=token, key_thumbprint=claims.key_thumbprint,
                                method=method, target=target, now=now)
        try:
            if claims.actor_chain:  # delegated: its line's agents too (depth 0: nothing runs)
                self._check_line(claims, confirmed_later=True)
            constrained = self._in_scope(claims, tool_id, args)
        except GrantError as exc:  # the proof holds: the refusal's write spends it
            exc.spent = ProofSpent.of(verified, now)
            raise
        return GrantUse(claims, self._agents.binding_in, now, nonce_key(verified),
                        nonce_kept_until(verified, now), counts=tool_id is not None,
                        limit=self._limit_of(claims.grant_id),
                        max_risk=self.delegator_max_risk, constrained=constrained)

    def prove_unspent(self, token: str, proof: str, *, method: str, target: str) -> GrantUse:
        """:meth:`prepare` for a use that calls no tool, and the proof's nonce not spent
        yet, read without claiming it (else ``proof_replayed``): for a request whose
        decision claims its proof, checked before anything is done on its behalf ahead of
        that decision (the HTTP gateway opening a session for it:
        :mod:`proctor.gateway.door`). Nothing is written: the decision claims the nonce,
        once."""
        use = self.prepare(token, proof, method=method, target=target, tool_id=None,
                           args=None)
        if use.nonce is not None and nonce_spent(self._store, use.nonce):
            raise GrantError("proof_replayed", "this proof was already used")
        return use

    def hold(self, token: str, key: PrivateKey) -> HeldGrant:
        """The grant ``token`` as held by this process with ``key``, for
        :meth:`prepare_held`: the grant checked as :meth:`inspect` checks it, and the
        key's public thumbprint equal to the grant's ``cnf.jkt`` (else
        ``proof_wrong_key``). Possession is proved here, once, to this process itself;
        the key is not kept."""
        return held_with(key, token, self.inspect(token).claims)

    def prepare_held(self, held: HeldGrant, *, tool_id: str,
                     args: Mapping[str, Any]) -> GrantUse:
        """:meth:`prepare` for a call of the process that holds the grant's key
        (:meth:`hold`): every check but the proof, whose key was checked once; no nonce
        is stored. The use is counted and confirmed in the write as any other."""
        now = self._clock.now()
        claims = self._codec.decode(held.token, now=now)
        self._check_binding(claims, confirmed_later=True)
        if claims.actor_chain:
            self._check_line(claims, confirmed_later=True)
        constrained = self._in_scope(claims, tool_id, args)
        return GrantUse(claims, self._agents.binding_in, now, None, None, counts=True,
                        limit=self._limit_of(claims.grant_id), held=True,
                        max_risk=self.delegator_max_risk, constrained=constrained)

    def _in_scope(self, claims: GrantClaims, tool_id: str | None,
                  args: Mapping[str, Any] | None) -> frozenset[str]:
        """Raise unless the call is in the grant's scope; the arguments its scope
        constrains for it (:meth:`GrantScope.constrained`; none for a later tool, which
        no entry names, nor for a use that calls no tool)."""
        if tool_id is None:
            return frozenset()
        try:
            constrained = claims.scope.constrained(tool_id, args or {})
            if constrained is None:
                self._later_tool(claims, tool_id, args or {})
                return frozenset()
            return constrained
        except GrantError as exc:
            exc.holder = claims  # the caller proved the grant's key: the refusal is theirs
            raise

    def prepare_within(self, claims: GrantClaims, *, tool_id: str,
                       args: Mapping[str, Any]) -> GrantUse:
        """A use inside a call already decided on this grant (the agent's answer to an
        upstream's request during it): the scope checked (a later tool decided as in
        :meth:`prepare`); the token and its proof were checked by that call's use. It
        counts no use and claims no nonce; the write confirms the grant, its agent and
        its task may still be used."""
        constrained = self._in_scope(claims, tool_id, args)
        use = self.confirming(claims)
        use.constrained = constrained
        return use

    def confirming(self, claims: GrantClaims) -> GrantUse:
        """A use that counts nothing and claims no nonce, only confirms in the write that
        the grant, its agent and its task may still be used (a call approved later)."""
        return GrantUse(claims, self._agents.binding_in, self._clock.now(), None, None,
                        counts=False, max_risk=self.delegator_max_risk)

    def apply_alone(self, use: GrantUse | ProofSpent) -> None:
        """Write ``use`` in a transaction of its own (no audit event with it)."""
        with self._store.transaction() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            cursor = driver.cursor()
            try:
                use.apply(WriteCursor(cursor, is_sqlite=self._store.backend == "sqlite"))
            except driver_errors() as exc:
                raise StoreError(f"database error: {type(exc).__name__}") from exc
            finally:
                cursor.close()

    def raise_refusal(self, use: GrantUse) -> None:
        """Raise the check ``use`` failed when it was written, if one did: a task found
        over is ended; the refusal names the grant's holder unless it was a replay."""
        exc = use.refusal
        if exc is None:
            return
        if exc.code in ("task_expired", "task_idle"):
            self.end_lapsed(use.claims.task_id, exc.message)
        if exc.code != "proof_replayed":  # a replay may be anyone's: name no one
            exc.holder = use.claims
        raise exc

    def accessor_of(self, grant_id: str) -> str:
        """The grant's accessor (it never changes: kept in memory once read)."""
        return self._limit_of(grant_id)[1]

    def _later_tool(self, claims: GrantClaims, tool_id: str, args: Mapping[str, Any]) -> None:
        """A call outside the tools decided at issuance: out of scope, unless one of the
        grant's wildcards matches a tool that appeared since — then that tool is decided
        now as an issuance would have decided it (audited)."""
        later = (claims.wildcards is not None and claims.wildcards.allows(tool_id, args)
                 and not claims.scope.names(tool_id))
        if not later:
            raise GrantError("grant_out_of_scope", f"tool `{tool_id}` with these "
                             "arguments is outside the grant's scope")
        # a delegated grant allows no more than each grant of its line could: the tool
        # is decided for every agent of the line, the first holder first (each of their
        # wildcards matched it: a child's stays open only where its parent's was)
        task = self.task(claims.task_id)
        for depth in range(len(claims.ancestors), -1, -1):
            link = claims if depth == 0 else replace(
                claims, grant_id=claims.ancestors[depth - 1],
                agent_id=claims.actor_chain[depth - 1], ancestors=claims.ancestors[depth:],
                actor_chain=claims.actor_chain[depth:],
                actor_manifests=claims.line_manifests[depth:])
            rows = self._store.fetch("SELECT max_uses FROM grants WHERE id = {p}",
                                     [link.grant_id])
            self._issuer.decide_later_tool(link, tool_id, task, rows[0][0] if rows else None)

    def inspect(self, token: str) -> CheckedGrant:
        """Tell the truth about a grant without using it: its signature and claims, its
        agent, whether it (or an ancestor, or its task) is revoked, whether its task is
        over, and whether a use is left. Raises :class:`GrantError` with the first thing
        that makes it unusable.

        For operators and introspection; an agent's use always goes through :meth:`check`.
        It writes nothing, so it waits for no commit: with the in-process views it reads
        nothing from the store on SQLite (the change feed hears every commit before it
        answers) and only the lineage on PostgreSQL (:meth:`RevocationView.revoked_now`);
        a use-limited grant reads its count.
        """
        now = self._clock.now()
        claims = self._codec.decode(token, now=now)
        self._check_binding(claims)
        if claims.actor_chain:
            self._check_line(claims)
        revoked = (self._revocations.revoked_now(claims.lineage)
                   if self._revocations is not None
                   else self.leases.revoked_now(claims.lineage))
        if revoked:
            raise GrantError("grant_revoked", "the grant or one it derives from is revoked")
        lapsed = self._lapse(self.task(claims.task_id), now)
        if lapsed is not None:
            raise lapsed
        max_uses, accessor = self._limit_of(claims.grant_id)
        if max_uses is None:  # nothing to count: nothing to read
            return CheckedGrant(claims, None, accessor)
        uses_left, accessor = uses_left_of(self._store, claims.grant_id)
        return CheckedGrant(claims, uses_left, accessor)

    def _lapse(self, task: Task, now: datetime) -> GrantError | None:
        """Why ``task`` is over at ``now``; an idle deadline passed in the view's copy is
        read again (calls since may have moved it)."""
        lapsed = task.lapse(now)
        if lapsed is not None and lapsed.code == "task_idle" and self._tasks is not None:
            lapsed = self._tasks.fresh(task.id).lapse(now)
        return lapsed

    def _limit_of(self, grant_id: str) -> tuple[int | None, str]:
        """The grant's use limit and accessor, which never change: read once."""
        known = self._limits.get(grant_id)
        if known is None:
            rows = self._store.fetch("SELECT max_uses, accessor FROM grants WHERE id = {p}",
                                     [grant_id])
            if not rows:
                raise GrantError("grant_unknown", "the grant is not known to this issuer")
            if len(self._limits) >= _MAX_HELD:
                self._limits.clear()
            max_uses = rows[0][0]
            known = self._limits[grant_id] = (None if max_uses is None else int(max_uses),
                                              str(rows[0][1]))
        return known

    def identify(self, token: str) -> GrantClaims:
        """The claims of a token this issuer signed and that has not expired, whatever
        its state: for revoking a grant found where it should not be (a leak)."""
        return self._codec.decode(token, now=self._clock.now())

    # revoking

    def revoke(self, grant_or_accessor: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke a grant (by id or accessor) and everything derived from it."""
        return self._revoker.revoke(grant_or_accessor, reason, by=by)

    def revoke_agent(self, agent_id: str, reason: str, *, by: Actor = SYSTEM) -> list[str]:
        """Revoke every grant held by ``agent_id`` (and all derived from them), and cancel
        the offers made to it."""
        return self._revoker.revoke_agent(agent_id, reason, by=by)

    def end_lapsed(self, task_id: str, message: str) -> None:
        """End a task found past its lifetime or idle timeout (the sweeper would too)."""
        try:
            self.end_task(task_id, reason=message)
        except Exception:  # the refusal stands; the sweeper ends the task later
            log.exception("task %s is over but could not be ended", task_id)

    def sweep(self) -> Swept:
        """End tasks past their lifetime or idle timeout, revoke expired leases and forget
        proof nonces past their window. Run periodically by ``proctor serve``."""
        with self._store.reading() as conn:
            due = due_tasks(conn, self._clock.now())
        for task_id, reason in due:
            self.end_task(task_id, reason=f"task ended by itself: {reason}")
        expired = self.leases.sweep_expired()
        forgotten = forget_nonces(self._store, self._clock.now())  # a chunk a transaction
        return Swept(expired, forgotten, len(due))

    def claim_identity_proof(self, use: ProofUse) -> None:
        """Take the one use of an own-key identity proof bound to its request
        (:mod:`proctor.identity.request_proofs`): its ``jti`` is kept with the proofs of
        possession's nonces, for as long and swept alike, so that no process takes it
        again; ``proof_replayed`` if one did."""
        try:
            with self._store.transaction() as conn:
                claim_nonce(conn, VerifiedProof(use.nonce, use.issued_at, use.key_thumbprint),
                            self._clock.now())
        except GrantError as exc:
            raise GrantError("proof_replayed", "this own-key identity proof was already used: "
                             "sign one for each request") from exc

    def tree(self, task_id: str) -> list[LeaseNode]:
        return self.leases.subtree(task_id)

    # internals

    def _check_binding(self, claims: GrantClaims, *, confirmed_later: bool = False) -> None:
        """The grant's agent and key as registered; ``confirmed_later``: as this process's
        view has them, for a use whose write confirms them (:mod:`proctor.grants.use`)."""
        agents = self._agents
        binding = (agents.binding_seen if confirmed_later else agents.binding)(claims.agent_id)
        refusal = binding_refusal(binding, claims.key_thumbprint, claims.manifest_digest)
        if refusal is not None:
            raise refusal

    def _check_line(self, claims: GrantClaims, *, confirmed_later: bool = False) -> None:
        """The agents a delegated grant derives from, each trusted and active
        (:func:`~proctor.grants.agents.line_refusal`); ``confirmed_later`` as for
        :meth:`_check_binding`. The refusal names the grant's holder: a use's caller
        proved the grant's key (or holds it) before this runs."""
        agents = self._agents
        refusal = line_refusal(agents.binding_seen if confirmed_later else agents.binding,
                               claims.actor_chain, claims.line_manifests,
                               max_risk=self.delegator_max_risk)
        if refusal is not None:
            refusal.holder = claims
            raise refusal

    def _active_agent(self, agent_id: str, *, seen: bool = False) -> AgentBinding:
        """The agent as of now; ``seen``: as this process's view has it, for a grant whose
        write confirms it (its trust state, key and manifest)."""
        agents = self._agents
        binding = (agents.binding_seen if seen else agents.binding)(agent_id)
        if binding is None:
            raise AgentError("agent_unknown", f"agent `{agent_id}` is not registered")
        if not binding.is_active:
            raise AgentError("agent_not_active", f"agent `{agent_id}` is suspended or retired")
        return binding

    def _open_task(self, task_id: str) -> Task:
        task = self.task(task_id)
        if task.ended_at is not None:
            raise GrantError("task_ended", f"task `{task_id}` has ended")
        lapsed = self._lapse(task, self._clock.now())
        if lapsed is not None:
            self.end_lapsed(task_id, lapsed.message)
            raise lapsed
        return task


def _not_handed_on(to_agent: str) -> GrantError:
    """The one answer an exchange gives for an agent it may not hand its grant to: not
    registered, suspended or retired, or one policy refuses the grant (its decision is
    audited with the reasons). The delegating agent may not know the fleet: different
    answers would list the registered agents (404 ``agent_unknown`` against 403)."""
    return GrantError("issuance_denied", f"handing the grant on to `{to_agent[:200]}` is "
                      "denied: it names no agent this grant may be handed to (the audit "
                      "log keeps why)")


def _parent_of(offer: GrantOffer) -> ParentGrant:
    """The grant an exchange's offer hands on, as its delegator held it: the first of the
    offer's line. An offer stored before the parent's key was kept with it cannot be
    confirmed for its delegator: refused (an offer lives minutes; the delegator asks
    again)."""
    if offer.parent_key is None or not offer.actor_chain:
        raise GrantError("offer_expired", f"offer `{offer.id}` was made by an earlier "
                         "version, which did not keep what its redemption confirms of the "
                         "delegator: ask for it again")
    return ParentGrant(offer.parent_id, offer.actor_chain[0], offer.ancestors[1:],
                       offer.actor_chain[1:], offer.parent_key, offer.parent_manifest,
                       offer.actor_manifests[1:])


_T = TypeVar("_T")


def _once_more(issuance: Callable[[GrantError | None], _T]) -> _T:
    """``issuance(None)``, and once more if its grant's write refused it as decided on
    what another process had changed meanwhile (:data:`~proctor.grants.issuance.STALE`;
    the issuer dropped what was stale here first), given that refusal (its decisions'
    events name it: ``detail.decided_again``): a second refusal is final."""
    try:
        return issuance(None)
    except GrantError as exc:
        if exc.code not in STALE:
            raise
        first = exc
    return issuance(first)


def task_columns(task: Task) -> dict[str, Any]:
    """The ``tasks`` row that starts ``task``."""
    return {"id": task.id, "agent_id": task.agent_id, "purpose": task.purpose,
            "on_behalf_of": task.on_behalf_of, "started_at": task.started_at,
            "expires_at": task.expires_at, "idle_seconds": task.idle_seconds,
            "idle_until": task.idle_until}
