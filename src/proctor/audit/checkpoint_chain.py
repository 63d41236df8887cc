"""The checkpoints as a chain of their own: checked before a new one is signed, and
walked by verification.

Before anything signs a checkpoint (the writer at every multiple of its ``every``,
``proctor audit checkpoint``, an archive) it reads the log's last checkpoint in the
transaction that will add the new one, and signs nothing (:func:`continue_from` says
why) unless:

1. the last checkpoint's signature holds, with a key the signer trusts;
2. it lies before the position to sign;
3. the event at its position still has its hash (or, archived, the signed cut through
   it says so);
4. no multiple of the spacing it signed (``every``, the signer's own where it states
   none) lies between it and the position to sign (with no checkpoint at all: no
   multiple of the signer's ``every`` before that position), which would mean
   checkpoints were deleted.

So a chain rewritten under deleted checkpoints is never signed over. What a writer
cannot see, verification does (:func:`chain_problem`): each checkpoint of format 2
must name the one just before it (position and payload digest), belong to the same
log, and have no multiple of its ``every`` without a checkpoint before it; after the
last, no multiple of the writer's ``every`` may lie in the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from proctor.audit.chain import ChainHead
from proctor.audit.checkpoints import (
    Checkpoint,
    check_checkpoint,
    digest_of,
    link_of,
    sign_checkpoint,
)
from proctor.audit.cuts import Cut, check_cut
from proctor.clock import Clock
from proctor.documents import parse_json
from proctor.errors import AuditIntegrityError, DocumentError
from proctor.keys import Signer, SignerSource, Verifier, verifiers_for
from proctor.store import Store, as_utc
from proctor.store.tables import audit_checkpoints, audit_head

__all__ = ["DEFAULT_EVERY", "Break", "Fetch", "chain_problem", "connection_fetch", "continue_from",
           "first_missing", "insert_checkpoint", "sign_after", "verifiers_of",
           "write_checkpoint"]

DEFAULT_EVERY = 10_000
"""How often (events) a writer signs a checkpoint unless told otherwise. Not a setting:
every writer of a deployment uses it, and a reader uses it only where the chain states
no spacing of its own (before the first checkpoint; after the last, with the last's):
a value given per process could not be known to agree (docs/audit.md)."""

Break = tuple[int, str, str]
"""A break of the checkpoints' chain: position, kind, message (a verification problem)."""

Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
"""Runs one statement (``{p}`` for each parameter) in the signer's transaction."""

_LAST = ("SELECT seq, hash, kid, payload, signature FROM audit_checkpoints "
         "ORDER BY seq DESC LIMIT 1")
_EVENT_HASH = "SELECT hash FROM audit_events WHERE seq = {p}"
_CUT = "SELECT through, hash, kid, payload, signature FROM audit_cuts WHERE through = {p}"
_INSERT = ("INSERT INTO audit_checkpoints (seq, hash, kid, signed_at, payload, signature) "
           "VALUES ({p}, {p}, {p}, {p}, {p}, {p})")


def first_missing(after: int, before: int, every: int) -> int | None:
    """The first multiple of ``every`` strictly between ``after`` and ``before``, if any."""
    if every <= 0:
        return None
    due = (after // every + 1) * every
    return due if due < before else None


def _from_row(row: Sequence[Any]) -> Checkpoint:
    """A checkpoint row read on the driver: its time is taken from the signed payload
    (what is checked), the column being only its index."""
    seq, digest, kid, payload, signature = row
    checkpoint = Checkpoint(int(seq), str(digest), str(kid), datetime.fromtimestamp(0, UTC),
                            str(payload), str(signature))
    try:
        signed_at = parse_json(checkpoint.payload, what="checkpoint payload")["signed_at"]
        when = datetime.fromisoformat(str(signed_at))
    except (DocumentError, KeyError, TypeError, ValueError):
        return checkpoint  # a payload that does not parse fails its check
    return Checkpoint(checkpoint.seq, checkpoint.hash, checkpoint.kid, when.astimezone(UTC),
                      checkpoint.payload, checkpoint.signature)


def continue_from(fetch: Fetch, verifiers: Mapping[str, Verifier], *, at: int,
                  every: int) -> tuple[Checkpoint | None, str | None]:
    """The log's last checkpoint, to chain a new one at position ``at`` after it, and why
    nothing may be signed (None when it may; see the module docstring). ``every`` is the
    signer's spacing of checkpoints (0: none of its own)."""
    rows = fetch(_LAST, ())
    if not rows:
        due = first_missing(0, at, every)
        if due is not None:
            return None, (f"the log has no checkpoint, but one was due at position {due} "
                          "(checkpoints were deleted)")
        return None, None
    last = _from_row(rows[0])
    reason = check_checkpoint(last, verifiers)
    if reason is not None:
        return last, f"the last {reason[1]}"
    if last.seq >= at:
        return last, (f"the last checkpoint, at position {last.seq}, lies at or past "
                      f"position {at} (the head was moved back)")
    held = fetch(_EVENT_HASH, (last.seq,))
    if held:
        if str(held[0][0]) != last.hash:
            return last, (f"the event at position {last.seq} no longer has the hash its "
                          "checkpoint signed (the chain was rewritten)")
    else:
        cut = fetch(_CUT, (last.seq,))
        wrong = ("no archive cut through it" if not cut else
                 check_cut(Cut(int(cut[0][0]), *(str(v) for v in cut[0][1:])), verifiers,
                           {last.seq: last}))
        if wrong is None and str(cut[0][1]) != last.hash:
            wrong = "the archive cut through it names another hash"
        if wrong is not None:
            return last, (f"the event at position {last.seq}, which the last checkpoint "
                          f"signs, is missing: {wrong}")
    due = first_missing(last.seq, at, link_of(last).every or every)
    if due is not None:
        return last, (f"no checkpoint at position {due}, between the last one at position "
                      f"{last.seq} and position {at} (checkpoints were deleted)")
    return last, None


def sign_after(fetch: Fetch, signer: Signer, verifiers: Mapping[str, Verifier],
               head: ChainHead, now: datetime, *, every: int
               ) -> tuple[Checkpoint | None, str | None]:
    """A checkpoint of ``head`` signed now, chained after the log's last one (read with
    ``fetch`` in the transaction that will store it), with that one's spacing (else
    ``every``, else :data:`DEFAULT_EVERY`); or None and why not (:func:`continue_from`)."""
    last, wrong = continue_from(fetch, verifiers, at=head.seq, every=every)
    if wrong is not None:
        return None, wrong
    spacing = (link_of(last).every if last is not None else 0) or every or DEFAULT_EVERY
    return sign_checkpoint(signer, head, now, prev=last, every=spacing), None


def insert_checkpoint(execute: Callable[[str, Sequence[Any]], int], checkpoint: Checkpoint,
                      when: Any) -> None:
    """Add ``checkpoint`` in the signer's transaction (``execute`` runs a statement with
    ``{p}`` for each parameter; ``when``: its time as the backend stores it)."""
    execute(_INSERT, (checkpoint.seq, checkpoint.hash, checkpoint.kid, when,
                    checkpoint.payload, checkpoint.signature))


def verifiers_of(keys: SignerSource) -> dict[str, Verifier]:
    """The keys that may have signed the checkpoints a signer of ``keys`` chains onto:
    a keyring's every key (``checkpoint_verifiers``), else the current key itself."""
    every_key = getattr(keys, "checkpoint_verifiers", None)
    if callable(every_key):
        return dict(every_key())
    return verifiers_for([keys.current_signer()])


def connection_fetch(conn: Connection, is_sqlite: bool) -> Fetch:
    """A :data:`Fetch` on a SQLAlchemy connection's driver."""
    mark = "?" if is_sqlite else "%s"

    def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        result = conn.exec_driver_sql(sql.replace("{p}", mark), tuple(params))
        return [tuple(row) for row in result.all()] if result.returns_rows else []

    return fetch


def write_checkpoint(store: Store, keys: SignerSource, clock: Clock) -> Checkpoint | None:
    """Sign the current head now with ``keys``' current key, chained after the log's last
    checkpoint; None while the chain is empty. Refuses (:class:`AuditIntegrityError`)
    where :func:`continue_from` finds the last checkpoint does not hold."""
    signer = keys.current_signer()  # before the transaction: it may read the store
    verifiers = verifiers_of(keys)
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
        checkpoint, wrong = sign_after(connection_fetch(conn, store.backend == "sqlite"),
                                       signer, verifiers, ChainHead(int(head.seq), head.hash),
                                       clock.now(), every=DEFAULT_EVERY)
        if checkpoint is None:
            raise AuditIntegrityError(f"refusing to sign a checkpoint: {wrong}")
        conn.execute(insert(audit_checkpoints).values(
            seq=checkpoint.seq, hash=checkpoint.hash, kid=checkpoint.kid,
            signed_at=checkpoint.signed_at, payload=checkpoint.payload,
            signature=checkpoint.signature))
    return checkpoint


def chain_problem(checkpoints: Sequence[Checkpoint], *, last_seq: int, every: int
                  ) -> Break | None:
    """The first break of the checkpoints' own chain (``checkpoints``: those whose
    signatures hold, by position), and of their spacing up to the chain's last event
    ``last_seq``; ``every`` is the writer's spacing, for the gap before a log's first
    checkpoint and (with the last one's own) after the last."""
    before: Checkpoint | None = None
    log: str | None = None
    for checkpoint in checkpoints:
        link = link_of(checkpoint)
        at = checkpoint.seq
        if link.version >= 2:
            if link.prev is None and before is not None:
                return (at, "checkpoint_chain_broken", f"the checkpoint at position "
                        f"{at} starts a new chain of checkpoints after the one at "
                        f"position {before.seq}")
            if link.prev is not None:
                named, digest = link.prev
                if before is None or before.seq < named:
                    return (named, "checkpoint_missing", f"the checkpoint at position "
                            f"{named}, which the one at position {at} follows, is "
                            "missing (checkpoints were deleted)")
                if before.seq > named:
                    return (before.seq, "checkpoint_chain_broken", f"the checkpoint "
                            f"at position {before.seq} is not in the chain of "
                            f"checkpoints: the one at position {at} follows the one "
                            f"at position {named}")
                if digest_of(before) != digest:
                    return (named, "checkpoint_chain_broken", f"the checkpoint at "
                            f"position {named} is not the one the checkpoint at "
                            f"position {at} follows (it was replaced)")
            if log is not None and link.log != log:
                return (at, "checkpoint_chain_broken", f"the checkpoint at position "
                        f"{at} belongs to another log (`{link.log}`, not `{log}`)")
            log = link.log
            # before a log's first checkpoint, the spacing the verifier knows the writer's
            step = link.every if before is not None else every
            due = first_missing(0 if before is None else before.seq, at, step)
            if due is not None:
                return _missing(due, step)
        before = checkpoint
    # after the last: the larger of its spacing and the verifier's (a writer of another
    # spacing may have appended since, signing none yet)
    step = max(link_of(before).every if before is not None else 0, every)
    due = first_missing(0 if before is None else before.seq, last_seq + 1, step)
    return None if due is None else _missing(due, step)


def _missing(due: int, every: int) -> Break:
    return (due, "checkpoint_missing", f"no checkpoint at position {due}: one is signed "
            f"every {every} events (checkpoints were deleted)")
