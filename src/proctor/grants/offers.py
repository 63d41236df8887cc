"""Grant offers: a grant decided for an agent, bound to a key only once that agent proves one.

A grant is bound to a key (``cnf.jkt``) and every use proves possession of it.
For an agent with a registered key that key is known. An agent that proves who
it is with a JWT-SVID or an OIDC workload token has none: its grant must be
bound to a key it presents — and only *it* may present that key. Whoever else
asks for the grant (a delegating agent, an operator) could otherwise sign the
holder proof with a key of their own and then act as that agent.

So a grant for such an agent that is asked for by anyone but the agent itself
is an **offer**: decided like any issuance (policy, scope, expiry, depth), kept
in the store, and turned into a grant when the agent it names redeems it with
its own identity proof and a proof of the key to bind, whose ``ath`` is the
hash of that identity proof (see :class:`~proctor.grants.holders.HolderProof`).
An offer is single use and short-lived (``redeem_by``); the grant's own expiry
is fixed when the offer is made; revoking the parent, ending the task or
suspending the agent makes it worthless. An exchange's offer is decided again at
redemption for the delegator too, as the exchange was: it keeps the key and
manifest of the parent grant, which the redemption confirms the delegator still
holds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from proctor.audit import WriteCursor
from proctor.errors import GrantError
from proctor.grants.scope import GrantScope
from proctor.store import as_utc
from proctor.store.tables import grant_offers

__all__ = ["OFFER_TTL_SECONDS", "GrantOffer", "cancel_offer", "cancel_offers", "load_offer",
           "new_offer_id", "save_offer", "take_offer"]

OFFER_TTL_SECONDS = 300


def new_offer_id() -> str:
    return f"offer_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class GrantOffer:
    """A decided grant waiting for its agent to prove the key it will be bound to."""

    id: str
    task_id: str
    parent_id: str  # the task (an issuance) or the parent grant (a delegation)
    agent_id: str
    scope: GrantScope
    max_uses: int | None
    ancestors: tuple[str, ...]
    actor_chain: tuple[str, ...]
    approved: bool
    created_at: datetime
    redeem_by: datetime
    expires_at: datetime
    redeemed_at: datetime | None = None
    grant_id: str | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    wildcards: GrantScope | None = None
    # an exchange's: the key and manifest the delegator's grant (the parent) is bound to,
    # which the redemption confirms the delegator still holds (None: not a delegation, or
    # an offer stored before they were kept)
    parent_key: str | None = None
    parent_manifest: str | None = None
    # the manifest each grant of its line was issued under (as ``actor_chain``), for the
    # grant's `act` chain
    actor_manifests: tuple[str | None, ...] = ()

    @property
    def is_delegated(self) -> bool:
        """Made by an exchange (its parent a grant), not for a task by an operator."""
        return self.parent_id != self.task_id

    def refusal(self, now: datetime) -> GrantError | None:
        """Why the offer cannot be redeemed now, or None."""
        if self.redeemed_at is not None:
            return GrantError("offer_redeemed", f"offer `{self.id}` was already redeemed")
        if self.cancelled_at is not None:
            return GrantError("offer_cancelled", f"offer `{self.id}` was cancelled: "
                              f"{self.cancel_reason or 'no reason given'}")
        if now >= self.redeem_by or now >= self.expires_at:
            return GrantError("offer_expired", f"offer `{self.id}` has expired")
        return None

    def stored_scope(self) -> dict[str, Any]:
        """The ``scope`` column: the scope, with what the offer keeps beside it (its
        wildcards as asked for, its parent grant's key and manifest)."""
        stored = self.scope.as_json()
        if self.wildcards is not None:
            stored["wild"] = self.wildcards.as_json()["tools"]
        if self.parent_key is not None:
            stored["parent"] = {"key": self.parent_key, "manifest": self.parent_manifest,
                                "line": list(self.actor_manifests)}
        return stored

    def as_json(self) -> dict[str, Any]:
        return {
            "offer": self.id, "agent": self.agent_id, "task": self.task_id,
            "scope": self.scope.as_json(), "max_uses": self.max_uses,
            "actor_chain": list(self.actor_chain), "redeem_by": self.redeem_by.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def save_offer(conn: Connection, offer: GrantOffer) -> None:
    conn.execute(insert(grant_offers).values(
        id=offer.id, task_id=offer.task_id, parent_id=offer.parent_id,
        agent_id=offer.agent_id, max_uses=offer.max_uses, scope=offer.stored_scope(),
        ancestors=list(offer.ancestors), actor_chain=list(offer.actor_chain),
        approved=offer.approved, created_at=offer.created_at, redeem_by=offer.redeem_by,
        expires_at=offer.expires_at))


def load_offer(conn: Connection, offer_id: str) -> GrantOffer:
    """The offer, or ``offer_unknown``."""
    row = conn.execute(select(grant_offers).where(grant_offers.c.id == offer_id)).first()
    if row is None:
        raise GrantError("offer_unknown", f"offer `{offer_id[:80]}` does not exist")
    parent = row.scope.get("parent")
    parent = parent if isinstance(parent, dict) else {}
    return GrantOffer(
        row.id, row.task_id, row.parent_id, row.agent_id, GrantScope.from_json(row.scope),
        row.max_uses, tuple(row.ancestors), tuple(row.actor_chain), bool(row.approved),
        as_utc(row.created_at), as_utc(row.redeem_by), as_utc(row.expires_at),
        as_utc(row.redeemed_at) if row.redeemed_at else None, row.grant_id,
        as_utc(row.cancelled_at) if row.cancelled_at else None, row.cancel_reason,
        GrantScope.from_json({"tools": row.scope["wild"]}) if "wild" in row.scope else None,
        parent.get("key"), parent.get("manifest"), _line(parent.get("line")))


def _line(value: object) -> tuple[str | None, ...]:
    """The stored manifests of an offer's line (none for an offer stored before them)."""
    if not isinstance(value, list):
        return ()
    return tuple(v if isinstance(v, str) else None for v in value)


def take_offer(conn: Connection, offer: GrantOffer, grant_id: str, now: datetime) -> None:
    """Mark the offer redeemed by ``grant_id``; a second redemption finds it taken."""
    taken = conn.execute(update(grant_offers).where(and_(
        grant_offers.c.id == offer.id, grant_offers.c.redeemed_at.is_(None),
        grant_offers.c.cancelled_at.is_(None))).values(redeemed_at=now, grant_id=grant_id))
    if taken.rowcount != 1:
        raise GrantError("offer_redeemed", f"offer `{offer.id}` was already redeemed or "
                         "cancelled")


def cancel_offer(conn: Connection, offer_id: str, reason: str, now: datetime) -> bool:
    """Cancel one open offer; False if it was redeemed or cancelled already."""
    result = conn.execute(update(grant_offers).where(and_(
        grant_offers.c.id == offer_id, grant_offers.c.redeemed_at.is_(None),
        grant_offers.c.cancelled_at.is_(None))).values(cancelled_at=now,
                                                       cancel_reason=reason[:500]))
    return int(result.rowcount) == 1


_CANCEL_OFFERS = ("UPDATE grant_offers SET cancelled_at = {p}, cancel_reason = {p} "
                  "WHERE agent_id = {p} AND redeemed_at IS NULL AND cancelled_at IS NULL")


def cancel_offers(tx: WriteCursor, agent_id: str, reason: str, now: datetime) -> int:
    """Cancel every open offer to ``agent_id`` (its grants were revoked: it was
    suspended or retired, or an operator revoked them), in ``tx``'s transaction."""
    return tx.execute(_CANCEL_OFFERS, [tx.time(now), reason[:500], agent_id])
