"""Step 4 of an issuance (:mod:`proctor.grants.issuance`), in the audit writer's
transaction: a grant (:class:`NewGrant`) or an offer (:class:`NewOffer`) stored as the
effects of its decisions' first event, each confirming what it was decided on (the
agent, a delegator, the lineage, the policy revision) as that transaction sees it, and
the refusal's event when it does not stand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from proctor.audit import AuditEvent, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.errors import AgentError, GrantError
from proctor.grants.accounting import nonce_kept_until, nonce_key
from proctor.grants.agents import (
    AgentBinding,
    binding_refusal,
    line_refusal,
)
from proctor.grants.offers import (
    GrantOffer,
)
from proctor.grants.proofs import VerifiedProof
from proctor.grants.requests import (
    STALE,
    DecidedOn,
    Delegator,
    Request,
)
from proctor.grants.tokens import GrantClaims
from proctor.grants.use import AgentRead, active_revision, any_revoked, riskier
from proctor.identity.agent import ACTIVE_STATES

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
    """Storing a grant, as the effects of its issuance's audit event: step 4 of
    :mod:`proctor.grants.issuance`, in the audit writer's transaction. After the write,
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
    # the risk from which the line's agents lend nothing: required, never a default
    max_risk: int = field(kw_only=True)

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
        """Step 4 of :mod:`proctor.grants.issuance` but the two rows: raises the refusal."""
        request = self.request
        agent = _confirm_agent(tx, self.agent, request.agent_id, self.decided)
        if (agent.key_thumbprint, agent.manifest_digest) != (request.agent_key,
                                                             request.manifest_digest):
            raise GrantError("agent_changed", "the agent's key or manifest changed since the "
                             "issuance was read: ask again")
        _confirm_delegator(tx, self.agent, self.delegator, request, self.max_risk)
        _confirm_lineage(tx, request, self.revisions)
        offer = self.offer
        if offer is not None and tx.execute(_TAKE_OFFER, [tx.time(self.now),
                                                          self.claims.grant_id, offer.id]) != 1:
            raise GrantError("offer_redeemed", f"offer `{offer.id}` was already redeemed or "
                             "cancelled")
        nonce = None
        if self.proof is not None:
            nonce = nonce_key(self.proof)
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
    # the risk from which the line's agents lend nothing: required, never a default
    max_risk: int = field(kw_only=True)

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
        _confirm_delegator(tx, self.agent, self.delegator, self.request, self.max_risk)
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
                       request: Request, max_risk: int) -> None:
    """An exchange's delegator (if any) as ``tx`` sees it: as its tools were decided for
    it (:func:`_confirm_agent`: a drift, review or risk committed since is
    ``agent_changed``, decided once more), its grant still usable by it (its key and
    manifest, as a use's write confirms them), and the child's line (``request``'s
    ``actor_chain``: the delegator and the agents its grant derives from) trusted and
    active, each on the manifest its own grant was issued under,
    at a risk below ``max_risk`` (``delegator_not_trusted``, as a use of the child is
    refused); else raises the refusal."""
    if delegator is None:
        return
    agent = _confirm_agent(tx, read, delegator.agent_id, delegator.decided, who="delegator")
    refusal = binding_refusal(agent, delegator.key_thumbprint, delegator.manifest_digest) \
        or line_refusal(lambda agent_id: read(tx, agent_id), request.actor_chain,
                        request.actor_manifests, max_risk=max_risk)
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
