"""Counting what a grant allows: its lifetime, its uses, and the proof nonces it has seen.

Each function runs inside the caller's transaction, so a failed check or issuance
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from proctor.audit import AuditEvent, WriteCursor
from proctor.errors import GrantError
from proctor.grants.proofs import PROOF_WINDOW_SECONDS, VerifiedProof
from proctor.jose import b64url_encode
from proctor.store import Store
from proctor.store.chunks import delete_in_chunks
from proctor.store.tables import grants, proof_nonces

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_TTL_SECONDS",
    "ProofSpent",
    "check_max_uses",
    "check_ttl",
    "claim_nonce",
    "forget_nonces",
    "nonce_kept_until",
    "nonce_key",
    "nonce_spent",
    "reserve_uses",
    "use_once",
    "uses_left_of",
]

DEFAULT_TTL_SECONDS = 300
_USES = "SELECT max_uses, uses, accessor FROM grants WHERE id = {p}"
MAX_TTL_SECONDS = 3600


def check_max_uses(max_uses: int | None) -> None:
    if max_uses is not None and max_uses < 1:
        raise GrantError("grant_max_uses_invalid", "max uses must be at least 1")


def reserve_uses(conn: Connection, parent_id: str, max_uses: int | None) -> None:
    """A child of a use-limited grant takes its uses out of the parent's: delegation
    can never multiply uses."""
    row = conn.execute(select(grants.c.max_uses, grants.c.uses)
                       .where(grants.c.id == parent_id)).first()
    if row is None or row.max_uses is None:
        return
    left = int(row.max_uses) - int(row.uses)
    if max_uses is None or max_uses > left:
        raise GrantError("delegation_widens_uses",
                         f"the parent grant has {left} uses left: the child must ask for "
                         "at most that many")
    result = conn.execute(update(grants).where(and_(
        grants.c.id == parent_id, grants.c.uses + max_uses <= grants.c.max_uses))
        .values(uses=grants.c.uses + max_uses))
    if result.rowcount != 1:
        raise GrantError("grant_uses_exhausted", "the parent grant has no uses left")


def check_ttl(ttl_seconds: int | None) -> int:
    ttl = DEFAULT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise GrantError("grant_ttl_invalid",
                         f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    return ttl


# How much longer than its proof's own window a nonce is kept: the clocks of the
# nodes sharing the store may disagree by up to this much.
NONCE_CLOCK_MARGIN_SECONDS = 60


def nonce_kept_until(proof: VerifiedProof, now: datetime) -> datetime:
    """When ``proof``'s nonce may be forgotten: once no node can accept the proof again.

    A proof is accepted while ``|int(now) - iat| <= PROOF_WINDOW_SECONDS``, that is
    until ``iat + PROOF_WINDOW_SECONDS + 1``; a proof dated ahead of the clock is
    therefore accepted for longer than one window after its use. The nonce outlives
    that by the clock margin.
    """
    last_accepted = datetime.fromtimestamp(proof.issued_at + PROOF_WINDOW_SECONDS + 1,
                                           tz=now.tzinfo)
    return max(now, last_accepted) + timedelta(seconds=NONCE_CLOCK_MARGIN_SECONDS)


# The longest key ``proof_nonces`` holds (its column, migration 0026)
_NONCE_KEY_CHARS = 140


def nonce_key(proof: VerifiedProof) -> str:
    """The key ``proof``'s use is kept under in ``proof_nonces``: its time (``iat``, ten
    digits), the key that signed it (16 hex digits of the SHA-256 of its thumbprint), then
    its nonce, ``1796644800:<signer>:<nonce>``.

    A replay is the same signed proof, so the same time, key and nonce: the same key,
    refused as before. The signer is part of it because the nonce is the client's
    choice, and guessable (proctor's own client begins it with a count): without it,
    another agent could sign a proof of its own with the victim's time and nonce and
    spend the victim's proof before it was sent (``proof_replayed``). Only the holder
    of the key can sign under its part of the keys, and could as well sign a new nonce.
    A nonce too long for the column is kept as its SHA-256 (one key's proofs only;
    to be the same as another nonce of that key, one would need a preimage).
    What the time buys is the b-tree's order: proofs arrive in the order of their time,
    so a batch's nonces go to the right edge of the one b-tree (a leaf or two per
    commit), where random nonces took a leaf each (migration 0026). The proof check
    keeps ``iat`` within a minute of the clock: ten digits until the year 2286, and
    text order is time order.
    """
    signer = hashlib.sha256(proof.key_thumbprint.encode()).hexdigest()[:16]
    key = f"{proof.issued_at:010d}:{signer}:{proof.nonce}"
    if len(key) <= _NONCE_KEY_CHARS:
        return key
    digest = b64url_encode(hashlib.sha256(proof.nonce.encode()).digest())
    return f"{proof.issued_at:010d}:{signer}:#{digest}"


# A nonce is kept until its proof's time plus this (``nonce_kept_until``: a proof is
# accepted while its time is within the window of the clock, so never later than that)
_NONCE_KEPT_SECONDS = PROOF_WINDOW_SECONDS + 1 + NONCE_CLOCK_MARGIN_SECONDS


def forget_nonces(store: Store, now: datetime, *, chunk: int | None = None,
                  most_chunks: int | None = None) -> int:
    """Forget the proof nonces kept past ``now`` (the sweeper); how many.

    A nonce's key begins with its proof's time (:func:`nonce_key`), and it is kept until
    that time plus :data:`_NONCE_KEPT_SECONDS`: those past it are the b-tree's left edge,
    found by a key range rather than a scan of every nonce of the last two minutes
    (proof times before ``now`` less 121 s). ``expires_at`` is asked as well,
    so no nonce goes before its time, whatever its key. The oldest first, ``chunk`` a
    transaction (:func:`~proctor.store.chunks.delete_in_chunks`: the nonces of a long
    outage are not one transaction holding SQLite's write lock, which every proof's
    claim waits for); at most ``most_chunks`` of them (None: all)."""
    before = f"{math.ceil(now.timestamp()) - _NONCE_KEPT_SECONDS:010d}"
    past = and_(proof_nonces.c.nonce < before, proof_nonces.c.expires_at < now)

    def one_chunk(conn: Connection, size: int) -> tuple[int, bool]:
        oldest = (select(proof_nonces.c.nonce).where(past).order_by(proof_nonces.c.nonce)
                  .limit(size).scalar_subquery())
        done = int(conn.execute(delete(proof_nonces).where(
            proof_nonces.c.nonce.in_(oldest))).rowcount)
        return done, done < size

    return delete_in_chunks(store, one_chunk, chunk=chunk, most_chunks=most_chunks)


def claim_nonce(conn: Connection, proof: VerifiedProof, now: datetime) -> None:
    """Record ``proof``'s nonce as used; a nonce seen before is ``proof_replayed``."""
    try:
        with conn.begin_nested():
            conn.execute(insert(proof_nonces).values(
                nonce=nonce_key(proof), expires_at=nonce_kept_until(proof, now)))
    except IntegrityError as exc:
        raise GrantError("proof_replayed", "this proof was already used") from exc


def nonce_spent(store: Store, nonce: str) -> bool:
    """Whether the nonce kept under ``nonce`` (:func:`nonce_key`) was claimed, read
    without claiming it (on the store's fast read path)."""
    return bool(store.fetch("SELECT 1 FROM proof_nonces WHERE nonce = {p}", [nonce]))


_CLAIM = ("INSERT INTO proof_nonces (nonce, expires_at) VALUES ({p}, {p}) "
          "ON CONFLICT DO NOTHING RETURNING nonce")


@dataclass(slots=True)
class ProofSpent:
    """The :class:`~proctor.audit.Effects` of a use refused after its proof was verified
    but before its write (a tool outside the grant's scope, an agent that may not act):
    the proof's nonce claimed with the refusal's event. The proof names the method, the
    URL and the grant, not the call: left unclaimed, whoever captured the refused request
    could spend it on a call the grant allows. ``refuse``: the event to write instead
    if the nonce was claimed already (a replay, which may be anyone's); after the write,
    ``refusal`` is ``proof_replayed`` then, else None."""

    nonce: str
    until: datetime
    refuse: Callable[[GrantError], AuditEvent | None] = field(default=lambda _exc: None)
    refusal: GrantError | None = None

    @classmethod
    def of(cls, proof: VerifiedProof, now: datetime) -> ProofSpent:
        return cls(nonce_key(proof), nonce_kept_until(proof, now))

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None
        if tx.rows(_CLAIM, [self.nonce, tx.time(self.until)]):
            return None
        self.refusal = GrantError("proof_replayed", "this proof was already used")
        return self.refuse(self.refusal)


def uses_left_of(store: Store, grant_id: str) -> tuple[int | None, str]:
    """The uses a grant has left (None: no limit) and its accessor, without using one
    (on the store's fast read path); ``grant_uses_exhausted`` if none is left."""
    rows = store.fetch(_USES, [grant_id])
    if not rows:
        raise GrantError("grant_unknown", "the grant is not known to this issuer")
    max_uses, uses, accessor = rows[0]
    if max_uses is None:
        return None, str(accessor)
    left = int(max_uses) - int(uses)
    if left <= 0:
        raise GrantError("grant_uses_exhausted", "the grant has no uses left")
    return left, str(accessor)


def use_once(conn: Connection, grant_id: str) -> tuple[int | None, str]:
    """Count one use; returns the uses left (None: no limit) and the grant's accessor."""
    row = conn.execute(select(grants.c.max_uses, grants.c.uses, grants.c.accessor)
                       .where(grants.c.id == grant_id)).first()
    if row is None:
        raise GrantError("grant_unknown", "the grant is not known to this issuer")
    if row.max_uses is None:
        return None, str(row.accessor)
    result = conn.execute(update(grants).where(and_(
        grants.c.id == grant_id, grants.c.uses < grants.c.max_uses)).values(uses=grants.c.uses + 1))
    if result.rowcount != 1:
        raise GrantError("grant_uses_exhausted", "the grant has no uses left")
    return int(row.max_uses) - int(row.uses) - 1, str(row.accessor)
