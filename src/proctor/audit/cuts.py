"""Archive cuts: a signed statement that the events up to a position were archived.

:func:`~proctor.audit.retention.archive_segment` deletes the oldest events; without more,
a ``DELETE`` of the same rows would look the same. So the archive signs a *cut* in the
transaction that deletes them: "the events up to ``through`` (whose last has ``hash``)
were archived while the log's last checkpoint was ``after``". It belongs to the
checkpoints' chain: it names the last checkpoint (position and payload digest) and the
log id. :func:`~proctor.audit.verification.verify_store` requires one whenever the
stored chain starts after position 1 at a checkpoint of format 2.

The signed payload is canonical JSON::

    {"after": {"digest": "<hex>", "seq": 1200}, "hash": "<hex>", "kid": "<key id>",
     "log": "<32 hex>", "signed_at": "...Z", "through": 1000,
     "type": "proctor.audit.cut", "v": 1}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from proctor.audit.chain import canonical_json
from proctor.audit.checkpoints import Checkpoint, digest_of, link_of
from proctor.audit.events import format_time
from proctor.documents import parse_json
from proctor.errors import DocumentError
from proctor.jose import b64url_decode, b64url_encode
from proctor.keys import Signer, Verifier
from proctor.store import Store
from proctor.store.tables import audit_cuts

__all__ = ["Cut", "check_cut", "insert_cut", "load_cuts", "read_cuts", "sign_cut"]

_TYPE = "proctor.audit.cut"
_FIELDS = frozenset({"type", "v", "through", "hash", "kid", "signed_at", "log", "after"})


@dataclass(frozen=True, slots=True)
class Cut:
    through: int
    hash: str
    kid: str
    payload: str
    signature: str

    def signed(self) -> dict[str, Any]:
        """The payload's fields (empty if it is not a JSON object)."""
        try:
            payload = parse_json(self.payload, what="cut payload")
        except DocumentError:
            return {}
        return payload if isinstance(payload, dict) else {}


def sign_cut(signer: Signer, through: int, hash_: str, after: Checkpoint, now: datetime
             ) -> Cut:
    """The cut of the events up to ``through`` (the last with hash ``hash_``), signed by
    ``signer`` at ``now``; ``after`` is the log's last checkpoint (at ``through`` or later)."""
    payload = canonical_json({
        "type": _TYPE, "v": 1, "through": through, "hash": hash_, "kid": signer.kid,
        "signed_at": format_time(now), "log": link_of(after).log,
        "after": {"seq": after.seq, "digest": digest_of(after)}})
    return Cut(through, hash_, signer.kid, payload.decode("utf-8"),
               b64url_encode(signer.sign(payload)))


def check_cut(cut: Cut, verifiers: Mapping[str, Verifier],
              checkpoints: Mapping[int, Checkpoint]) -> str | None:
    """Why ``cut`` does not show an archive through its position, None when it does:
    its signature holds, its payload is its row's, and the checkpoint it was signed
    after is one of ``checkpoints`` (by position), unchanged, of the same log."""
    where = f"the archive cut through position {cut.through}"
    verifier = verifiers.get(cut.kid)
    if verifier is None:
        return f"{where} is signed by unknown key `{cut.kid}`"
    try:
        signature = b64url_decode(cut.signature)
    except ValueError:
        signature = b""
    if not verifier.verify(cut.payload.encode("utf-8"), signature):
        return f"{where} has an invalid signature"
    payload = cut.signed()
    after = payload.get("after")
    if (set(payload) != _FIELDS or payload.get("type") != _TYPE or payload.get("v") != 1
            or type(payload.get("through")) is not int or payload["through"] != cut.through
            or payload.get("hash") != cut.hash or payload.get("kid") != cut.kid
            or not isinstance(after, dict) or type(after.get("seq")) is not int
            or after["seq"] < cut.through):
        return f"{where} does not match its signed payload"
    named = checkpoints.get(after["seq"])
    if named is None or digest_of(named) != after.get("digest"):
        return (f"{where} was signed after a checkpoint at position {after['seq']} that "
                "the log no longer holds")
    if link_of(named).log != payload.get("log"):
        return f"{where} belongs to another log"
    return None


def load_cuts(store: Store) -> dict[int, Cut]:
    """Every archive cut in the store, by the position it cuts through."""
    with store.reading() as conn:
        return read_cuts(conn)


def read_cuts(conn: Connection) -> dict[int, Cut]:
    """Every archive cut, by the position it cuts through, as ``conn``'s transaction
    reads them (a verification's snapshot: :meth:`~proctor.store.Store.snapshot`)."""
    rows = conn.execute(select(audit_cuts)).all()
    return {int(r.through): Cut(int(r.through), r.hash, r.kid, r.payload, r.signature)
            for r in rows}


def insert_cut(execute: Callable[[str, Sequence[Any]], int], cut: Cut) -> None:
    """Add ``cut`` in the archive's transaction (``execute`` runs a statement with ``{p}``
    for each parameter)."""
    execute("INSERT INTO audit_cuts (through, hash, kid, payload, signature) "
            "VALUES ({p}, {p}, {p}, {p}, {p})",
            (cut.through, cut.hash, cut.kid, cut.payload, cut.signature))
