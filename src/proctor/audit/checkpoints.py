"""Signed checkpoints: "the event at position ``seq`` has hash ``hash``".

The hash chain alone shows that rows were changed, unless an attacker with
write access rewrites the whole tail and recomputes every hash. A checkpoint
signed with the issuer key pins the head at one moment; a rewritten tail no
longer matches it, and forging a new checkpoint needs the private key.

The checkpoints form a chain of their own (format 2): each names the one before it
(its position and the SHA-256 of its payload), the log it belongs to (a random id
fixed by the first checkpoint and copied into every later one) and how often the
writer signs (``every``: a checkpoint at every multiple of it). Deleting checkpoints
breaks that chain or leaves a multiple without its checkpoint, which
:mod:`proctor.audit.checkpoint_chain` finds, and no writer signs after such a gap.

Keys come from a :class:`~proctor.keys.SignerSource` (the issuer keyring in a
deployment): one signer is taken per checkpoint, so the ``kid`` in the payload
is always the key that signed it, whatever another node rotates meanwhile.

The signed payload is canonical JSON::

    {"every": 10000, "hash": "<hex>", "kid": "<key id>", "log": "<32 hex>",
     "prev": {"digest": "<hex>", "seq": 1190}, "seq": 1200,
     "signed_at": "2026-11-30T10:00:00.000000Z", "type": "proctor.audit.checkpoint", "v": 2}

``prev`` is null for a log's first checkpoint. Checkpoints of format 1 (earlier
versions: no ``log``, ``every`` nor ``prev``) still verify one by one; the first
checkpoint of format 2 names the last of them as its ``prev``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from proctor.audit.chain import ChainHead, canonical_json
from proctor.audit.events import format_time
from proctor.documents import parse_json, read_json
from proctor.errors import AuditError, DocumentError
from proctor.jose import b64url_decode, b64url_encode
from proctor.keys import Signer, Verifier, verifiers_for
from proctor.store import Store, as_utc
from proctor.store.tables import audit_checkpoints

__all__ = [
    "Checkpoint",
    "Link",
    "check_checkpoint",
    "digest_of",
    "link_of",
    "load_checkpoints",
    "read_checkpoints",
    "read_kept_checkpoints",
    "sign_checkpoint",
    "verifiers_for",
]

_TYPE = "proctor.audit.checkpoint"
_KEYS = frozenset({"seq", "hash", "kid", "signed_at", "payload", "signature"})
_HASH = re.compile("[0-9a-f]{64}")
_LOG_ID = re.compile("[0-9a-f]{32}")
_V1_FIELDS = frozenset({"type", "v", "seq", "hash", "kid", "signed_at"})
_V2_FIELDS = _V1_FIELDS | {"log", "every", "prev"}


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


@dataclass(frozen=True, slots=True)
class Link:
    """What a checkpoint says of the checkpoints' own chain: its payload's format
    (``version``), the ``log`` it belongs to, the writer's ``every`` (0: not stated)
    and the checkpoint before it as ``(seq, digest)`` (None: the log's first).
    A format 1 checkpoint states none of it (``log`` None, ``every`` 0)."""

    version: int
    log: str | None
    every: int
    prev: tuple[int, str] | None


def digest_of(checkpoint: Checkpoint) -> str:
    """The SHA-256 of ``checkpoint``'s signed payload: what the next checkpoint names."""
    return hashlib.sha256(checkpoint.payload.encode("utf-8")).hexdigest()


def new_log_id() -> str:
    """A random id for a new log, fixed by its first checkpoint."""
    return secrets.token_hex(16)


def sign_checkpoint(signer: Signer, head: ChainHead, now: datetime, *,
                    prev: Checkpoint | None = None, every: int = 0,
                    log_id: str | None = None) -> Checkpoint:
    """A new checkpoint of ``head``, signed by ``signer`` at ``now``, after ``prev`` (the
    last checkpoint of the log, None for its first): it carries ``prev``'s log id (or
    ``log_id``, or a new one where ``prev`` has none) and the writer's ``every``."""
    before = None if prev is None else link_of(prev)
    log = (before.log if before is not None and before.log is not None
           else log_id or new_log_id())
    payload = canonical_json({
        "type": _TYPE, "v": 2, "seq": head.seq, "hash": head.hash, "kid": signer.kid,
        "signed_at": format_time(now), "log": log, "every": every,
        "prev": None if prev is None else {"seq": prev.seq, "digest": digest_of(prev)}})
    signature = b64url_encode(signer.sign(payload))
    return Checkpoint(head.seq, head.hash, signer.kid, now, payload.decode("utf-8"), signature)


def _payload(checkpoint: Checkpoint) -> dict[str, Any]:
    try:
        payload = parse_json(checkpoint.payload, what="checkpoint payload")
    except DocumentError:
        payload = None
    return payload if isinstance(payload, dict) else {}


def _link(payload: Mapping[str, Any], seq: int) -> Link | None:
    """The link ``payload`` states, read to its shape; None if it is not one."""
    version = payload.get("v")
    if type(version) is not int:
        return None
    if version == 1:
        return Link(1, None, 0, None) if set(payload) == _V1_FIELDS else None
    if version != 2 or set(payload) != _V2_FIELDS:
        return None
    log, every, prev = payload["log"], payload["every"], payload["prev"]
    if not isinstance(log, str) or not _LOG_ID.fullmatch(log):
        return None
    if type(every) is not int or every < 0:
        return None
    if prev is None:
        return Link(2, log, every, None)
    if not isinstance(prev, dict) or set(prev) != {"seq", "digest"}:
        return None
    at, digest = prev["seq"], prev["digest"]
    if (type(at) is not int or not 1 <= at < seq or not isinstance(digest, str)
            or not _HASH.fullmatch(digest)):
        return None
    return Link(2, log, every, (at, digest))


def link_of(checkpoint: Checkpoint) -> Link:
    """What ``checkpoint`` (whose payload :func:`check_checkpoint` found sound) says of
    the checkpoints' chain; a payload that says nothing readable links to nothing."""
    return _link(_payload(checkpoint), checkpoint.seq) or Link(1, None, 0, None)


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
    payload = _payload(checkpoint)
    signed = (payload.get("type"), payload.get("seq"), payload.get("hash"),
              payload.get("kid"), payload.get("signed_at"))
    if (signed != (_TYPE, checkpoint.seq, checkpoint.hash, checkpoint.kid,
                   format_time(checkpoint.signed_at)) or type(payload.get("seq")) is not int
            or _link(payload, checkpoint.seq) is None):
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
        return read_checkpoints(conn)


def read_checkpoints(conn: Connection) -> list[Checkpoint]:
    """Every checkpoint, by position, as ``conn``'s transaction reads them (a
    verification's snapshot: :meth:`~proctor.store.Store.snapshot`)."""
    rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq)).all()
    return [Checkpoint(int(r.seq), r.hash, r.kid, as_utc(r.signed_at), r.payload, r.signature)
            for r in rows]
