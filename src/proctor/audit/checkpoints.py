"""Signed checkpoints: "the event at position ``seq`` has hash ``hash``".

The hash chain alone shows that rows were changed, unless an attacker with
write access rewrites the whole tail and recomputes every hash. A checkpoint
signed with the issuer key pins the head at one moment; a rewritten tail no
longer matches it, and forging a new checkpoint needs the private key.

Keys come from a :class:`~proctor.keys.SignerSource` (the issuer keyring in a
deployment): one signer is taken per checkpoint, so the ``kid`` in the payload
is always the key that signed it, whatever another node rotates meanwhile.

The signed payload is canonical JSON::

    {"hash": "<hex>", "kid": "<key id>", "seq": 1200,
     "signed_at": "2026-11-30T10:00:00.000000Z", "type": "proctor.audit.checkpoint", "v": 1}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from proctor.audit.chain import ChainHead, canonical_json
from proctor.audit.events import format_time
from proctor.clock import Clock
from proctor.documents import parse_json, read_json
from proctor.errors import AuditError, DocumentError
from proctor.jose import b64url_decode, b64url_encode
from proctor.keys import Signer, SignerSource, Verifier, verifiers_for
from proctor.store import Store, as_utc
from proctor.store.tables import audit_checkpoints, audit_head

__all__ = [
    "Checkpoint",
    "check_checkpoint",
    "load_checkpoints",
    "read_kept_checkpoints",
    "sign_checkpoint",
    "verifiers_for",
    "write_checkpoint",
]

_TYPE = "proctor.audit.checkpoint"
_KEYS = frozenset({"seq", "hash", "kid", "signed_at", "payload", "signature"})
_HASH = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    kid: str
    signed_at: datetime
    payload: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "kid": self.kid,
                "signed_at": format_time(self.signed_at), "payload": self.payload,
                "signature": self.signature}

    @classmethod
    def from_json(cls, data: Any, *, what: str = "a checkpoint") -> Checkpoint:
        """The checkpoint ``data`` (:meth:`as_json`'s shape) holds, read to its shape:
        a wrong type, a missing or an unknown key is refused by name
        (:class:`~proctor.errors.AuditError`), never converted."""
        if not isinstance(data, Mapping):
            raise AuditError(f"{what} is not a JSON object")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise AuditError(f"{what} has the unknown key `{str(unknown[0])[:80]}`")
        missing = [key for key in sorted(_KEYS) if key not in data]
        if missing:
            raise AuditError(f"{what} lacks `{missing[0]}`")
        seq = data["seq"]
        if type(seq) is not int or seq < 1:
            raise AuditError(f"{what} has a `seq` that is not a whole number from 1")
        texts = {key: data[key] for key in _KEYS - {"seq"}}
        wrong = sorted(key for key, value in texts.items() if not isinstance(value, str))
        if wrong:
            raise AuditError(f"{what} has a `{wrong[0]}` that is not a string")
        if not _HASH.fullmatch(texts["hash"]):
            raise AuditError(f"{what} has a `hash` that is not 64 lowercase hex digits")
        try:
            signed_at = datetime.fromisoformat(texts["signed_at"])
        except ValueError:
            signed_at = None
        if signed_at is None or signed_at.tzinfo is None:
            raise AuditError(f"{what} has a `signed_at` that is not an ISO 8601 time in UTC")
        return cls(seq, texts["hash"], texts["kid"], signed_at.astimezone(UTC),
                   texts["payload"], texts["signature"])


def sign_checkpoint(signer: Signer, head: ChainHead, now: datetime) -> Checkpoint:
    """A new checkpoint of ``head``, signed by ``signer`` at ``now``."""
    payload = canonical_json({"type": _TYPE, "v": 1, "seq": head.seq, "hash": head.hash,
                              "kid": signer.kid, "signed_at": format_time(now)})
    signature = b64url_encode(signer.sign(payload))
    return Checkpoint(head.seq, head.hash, signer.kid, now, payload.decode("utf-8"), signature)


def check_checkpoint(checkpoint: Checkpoint, verifiers: Mapping[str, Verifier]
                     ) -> tuple[str, str] | None:
    """Why ``checkpoint`` cannot be trusted, as ``(kind, message)``; None when it holds.

    The kind is ``checkpoint_unknown_key`` when no verifier has its key id,
    ``checkpoint_invalid`` when the signature or the payload does not hold.
    """
    verifier = verifiers.get(checkpoint.kid)
    where = f"checkpoint at position {checkpoint.seq}"
    if verifier is None:
        return "checkpoint_unknown_key", f"{where} is signed by unknown key `{checkpoint.kid}`"
    try:
        signature = b64url_decode(checkpoint.signature)
    except ValueError:
        signature = b""
    if not verifier.verify(checkpoint.payload.encode("utf-8"), signature):
        return "checkpoint_invalid", f"{where} has an invalid signature"
    try:
        payload = parse_json(checkpoint.payload, what="checkpoint payload")
    except DocumentError:
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    signed = (payload.get("type"), payload.get("v"), payload.get("seq"), payload.get("hash"),
              payload.get("kid"), payload.get("signed_at"))
    if signed != (_TYPE, 1, checkpoint.seq, checkpoint.hash, checkpoint.kid,
                  format_time(checkpoint.signed_at)) or type(payload.get("seq")) is not int:
        return "checkpoint_invalid", f"{where} does not match its signed payload"
    return None


_MAX_KEPT_BYTES = 16 << 20  # some 30,000 checkpoints


def read_kept_checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoints of a file kept out of band: one (``proctor audit checkpoint
    --json``'s output) or a JSON array of them. Anything else is refused
    (:class:`~proctor.errors.AuditError`), by name."""
    data = read_json(path, what="checkpoint file", error=AuditError,
                     max_bytes=_MAX_KEPT_BYTES)
    items = data if isinstance(data, list) else [data]
    if not items:
        raise AuditError(f"checkpoint file `{path}` holds no checkpoint")
    return [Checkpoint.from_json(item, what=f"checkpoint {at + 1} of `{path}`")
            for at, item in enumerate(items)]


def load_checkpoints(store: Store) -> list[Checkpoint]:
    """Every checkpoint in the store, by position."""
    with store.reading() as conn:
        rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq)).all()
    return [Checkpoint(int(r.seq), r.hash, r.kid, as_utc(r.signed_at), r.payload, r.signature)
            for r in rows]


def write_checkpoint(store: Store, keys: SignerSource, clock: Clock) -> Checkpoint | None:
    """Sign the current head now with ``keys``' current key; None while the chain is empty."""
    signer = keys.current_signer()  # before the transaction: it may read the store
    with store.transaction() as conn:
        head = conn.execute(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
            .with_for_update()).first()
        if head is None or head.seq == 0:
            return None
        existing = conn.execute(
            select(audit_checkpoints).where(audit_checkpoints.c.seq == head.seq)).first()
        if existing is not None:
            return Checkpoint(int(existing.seq), existing.hash, existing.kid,
                              as_utc(existing.signed_at), existing.payload, existing.signature)
        checkpoint = sign_checkpoint(signer, ChainHead(int(head.seq), head.hash), clock.now())
        conn.execute(insert(audit_checkpoints).values(
            seq=checkpoint.seq, hash=checkpoint.hash, kid=checkpoint.kid,
            signed_at=checkpoint.signed_at, payload=checkpoint.payload,
            signature=checkpoint.signature))
    return checkpoint
