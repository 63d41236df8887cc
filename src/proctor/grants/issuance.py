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
:meth:`Issuer.decide_delegated`), its grant still usable by it
(:func:`~proctor.grants.writes._confirm_delegator`). Such a
refusal stores nothing and drops what was stale here (the agent's entry in the view;
the engine's revision, loaded again), and the issuance is decided once more
(:meth:`~proctor.grants.authority.GrantAuthority.issue`, ``exchange``).

A grant issued, exchanged or redeemed from an offer (whose write takes the offer), and
an offer (:class:`NewOffer`), take steps 3 and 4 in one write: the decisions' events
and the grant (:class:`NewGrant`, the effects of the first event) go to the audit
writer together and share its group commit with whatever else is waiting; the token
is handed out once that has committed. A grant or an offer a human asked for (the
CLI's ``grant issue``, ``exchange``, ``redeem``; the API's, for a human caller) has
that human's event (``grant.issue``...) written in the same write, after the decisions':
it used to be written after the grant had committed, so a process that died between the
two left a grant with nothing in the log saying who asked for it, and an outage left a
grant issued, then revoked. The events stand only with the grant: a write
that refuses it writes none of them, but the refusal's event (``denied``, its code), or
nothing if the issuance is decided once more, whose events then name the refusal
(``detail.decided_again``). A write that fails (the audit log cannot take it) writes
none of them either: the attempt leaves its refusal's event (``issuance_denied``), or,
if even that cannot be written, is refused all the same. An issuance policy refuses
writes its events alone; one the engine failed on is refused ``engine_error``, not
``issuance_denied``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Connection, and_, insert, select

from proctor.audit import AuditEvent, AuditLog
from proctor.errors import AgentError, AuditUnavailableError, GrantError, IdentityError, ScopeError
from proctor.grants.accounting import claim_nonce, reserve_uses
from proctor.grants.deciding import _Deciding
from proctor.grants.holders import HolderProof
from proctor.grants.offers import (
    OFFER_TTL_SECONDS,
    GrantOffer,
    new_offer_id,
    save_offer,
    take_offer,
)
from proctor.grants.proofs import VerifiedProof, verify_proof
from proctor.grants.requests import (
    STALE,
    Decided,
    DecidedOn,
    Delegator,
    EnsureCurrent,
    IssuedGrant,
    ParentGrant,
    Request,
)
from proctor.grants.tokens import MAX_TOKEN_BYTES, GrantClaims, token_hash
from proctor.grants.writes import NewGrant, NewOffer
from proctor.store.tables import grants, policy_revisions
from proctor.store.tables import leases as lease_table

__all__ = ["ISSUE_METHOD", "STALE", "Decided", "DecidedOn", "Delegator", "EnsureCurrent",
           "IssuedGrant", "Issuer", "NewGrant", "NewOffer", "ParentGrant", "UnstoredGrant"]

ISSUE_METHOD = "grant/issue"


class UnstoredGrant(NamedTuple):
    """A grant decided and signed, not written: its token is handed out only once a
    write of ``new`` (the effects of ``events[0]``, the others written with it) has
    committed and stored it (``new.refusal`` None)."""

    issued: IssuedGrant
    new: NewGrant
    events: list[AuditEvent]


class Issuer(_Deciding):
    """The one way grants and offers are made (see the module docstring)."""

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

    # storing

    def grant(self, request: Request, key_thumbprint: str, proof: VerifiedProof | None, *,
              offer: GrantOffer | None = None, decided: Decided | None = None,
              requested: AuditEvent | None = None) -> IssuedGrant:
        """Sign and store the grant; one transaction (see the module docstring), the
        audit writer's with ``decided``'s events (the issuance's decisions) when there
        are any, and ``requested``'s (the human's who asked for it, completed here)."""
        events: Sequence[AuditEvent] = decided.events if decided is not None else ()
        if events and self._audit is not None:
            unstored = self.unstored(request, key_thumbprint, proof, decided, offer=offer)
            if requested is not None:
                made = unstored.issued
                events = [*events, _completed(requested, f'Grant::"{made.accessor}"', "issued",
                                              made.claims.task_id, made.claims.agent_id)]
            self._store_with(self._audit, events, unstored.new, "issuance")
            return unstored.issued
        now = self._clock.now()
        claims, token, accessor = self._signed(request, key_thumbprint, now)
        expires_at = claims.expires_at
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

    def unstored(self, request: Request, key_thumbprint: str, proof: VerifiedProof | None,
                 decided: Decided | None, *, offer: GrantOffer | None = None
                 ) -> UnstoredGrant:
        """The grant signed and its write's effects (:class:`NewGrant`, carried by the
        first of ``decided``'s events), not written yet."""
        now = self._clock.now()
        claims, token, accessor = self._signed(request, key_thumbprint, now)
        events = decided.events if decided is not None else []
        new = NewGrant(claims, accessor, token_hash(token), request, now, proof,
                       self._agents.binding_in,
                       decided.agent if decided is not None else None,
                       decided.revisions if decided is not None else None,
                       event=events[0] if events else None,
                       again=decided is not None and decided.again, offer=offer,
                       delegator=decided.delegator if decided is not None else None,
                       max_risk=self.max_risk)
        return UnstoredGrant(IssuedGrant(token, accessor, claims), new, list(events))

    def _signed(self, request: Request, key_thumbprint: str, now: datetime
                ) -> tuple[GrantClaims, str, str]:
        """The grant's claims, its token and its accessor."""
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
            manifest_digest=request.manifest_digest, actor_manifests=request.actor_manifests)
        token = self._codec.encode(claims)
        if len(token) > MAX_TOKEN_BYTES:
            raise ScopeError(f"a grant for {len(request.scope.tools)} scope entries is over "
                             f"{MAX_TOKEN_BYTES} bytes: name the tools the task needs")
        return claims, token, f"acc_{secrets.token_hex(12)}"

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
            self.renew(new.refusal.code, new.request.agent_id)
            raise new.refusal

    def renew(self, code: str, agent_id: str) -> None:
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

    def offer(self, request: Request, decided: Decided | None = None, *,
              requested: AuditEvent | None = None) -> GrantOffer:
        """Store ``request`` as an offer for its agent to redeem; its write confirms the
        policy revisions ``decided`` (:meth:`decide`'s) names still active, and writes
        ``requested`` (the human's who asked for it, completed here) with it."""
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
            parent_manifest=held_by.manifest_digest if held_by is not None else None,
            actor_manifests=request.actor_manifests)
        events: Sequence[AuditEvent] = decided.events if decided is not None else []
        if requested is not None:
            events = [*events, _completed(requested, f'Offer::"{offer.id}"', "offered",
                                          offer.task_id, offer.agent_id)]
        if events and self._audit is not None:
            new2 = NewOffer(offer, request, now, self._agents.binding_in,
                            decided.agent if decided is not None else None,
                            decided.revisions if decided is not None else None,
                            event=events[0], again=decided is not None and decided.again,
                            delegator=decided.delegator if decided is not None else None,
                            max_risk=self.max_risk)
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
                self.renew("policy_changed", request.agent_id)
                raise GrantError("policy_changed", f"policy revision {active} is active now, "
                                 "not the one the issuance was decided on: ask again")


def _completed(requested: AuditEvent, target: str, outcome: str, task_id: str,
               agent_id: str) -> AuditEvent:
    """The event of the human who asked for a grant or an offer, naming what was made."""
    return replace(requested, target=target, outcome=outcome, task=task_id,
                   detail={**requested.detail, "agent": agent_id})
