"""An operator's checkpoint or archive of the audit log, with its audit event, in one
transaction.

``proctor audit checkpoint`` signs the chain's head and stores the checkpoint;
``proctor audit archive`` moves the events up to a position into a segment file and
deletes them from the database. Each is the effects of its own event
(``audit.checkpoint``, ``audit.archive``), in the audit writer's transaction
(:mod:`proctor.oversight.audited`): the log holds the event if and only if the
checkpoint was stored or the events deleted. The event used to be written after the
change had committed, so a process that died between the two left a checkpoint, or a
log cut short, with nothing in the log saying who made it.

The checkpoint signs the head as that transaction finds it (the last event before its
own), chained after the log's last checkpoint, which must hold
(:func:`~proctor.audit.checkpoint_chain.sign_after`; ``audit_integrity_failed``
otherwise). The archive's segment file is written first (nothing is deleted yet); the
cut (:func:`~proctor.audit.retention.cut_segment`) checks that the segment's last event
is still the one the file ends with (``audit_integrity_failed``: archived or changed
meanwhile), stores the segment's closing checkpoint unless it is stored already and
signs the archive cut. Only once that has committed are the events and their keys
deleted, a chunk per transaction, outside the writer's
(:func:`~proctor.audit.retention.delete_archived`): a delete of the whole segment in
the writer's transaction held every decision behind it, and on PostgreSQL a large one
outlasted the writer's statement timeout every time. An archive first finishes the
deletion an earlier one left (a process stopped between two chunks).

Neither gives access nor takes it away; both change the record, so if the audit log
cannot be written neither is made (:class:`~proctor.errors.AuditUnavailableError`; the
segment file just written is removed again).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from proctor.audit import AuditEvent, AuditLog, Checkpoint, WriteCursor
from proctor.audit.chain import ChainHead
from proctor.audit.checkpoint_chain import DEFAULT_EVERY, sign_after, verifiers_of
from proctor.audit.retention import Segment, cut_segment, delete_archived, write_segment
from proctor.audit.writer import WITHDRAWN
from proctor.errors import AuditIntegrityError, ProctorError
from proctor.keys import Signer, SignerSource, Verifier
from proctor.oversight.audited import commit_with_event, insert_row, read_rows
from proctor.store import Store
from proctor.store.tables import audit_checkpoints

__all__ = ["archive_with_event", "checkpoint_with_event"]

log = logging.getLogger(__name__)

_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"


def _columns(checkpoint: Checkpoint) -> dict[str, object]:
    return {"seq": checkpoint.seq, "hash": checkpoint.hash, "kid": checkpoint.kid,
            "signed_at": checkpoint.signed_at, "payload": checkpoint.payload,
            "signature": checkpoint.signature}


@dataclass(slots=True)
class _Signing:
    """The head as the transaction finds it, signed and stored (unless it is already)."""

    signer: Signer
    verifiers: Mapping[str, Verifier]
    now: datetime
    event: AuditEvent
    made: Checkpoint | None = None
    refusal: ProctorError | None = None  # none: an empty chain is no refusal

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.made, self.refusal = None, None  # a retried batch applies it again
        head = tx.rows(_HEAD)
        if not head or int(head[0][0]) == 0:
            return WITHDRAWN  # nothing to sign, nothing made
        seq, digest = int(head[0][0]), str(head[0][1])
        stored = read_rows(tx, audit_checkpoints, "seq = {p}", [seq])
        if stored:  # signed already (by the writer, at its interval): nothing made
            row = stored[0]
            self.made = Checkpoint(int(row.seq), row.hash, row.kid, row.signed_at,
                                   row.payload, row.signature)
            return WITHDRAWN
        self.made, wrong = sign_after(tx.rows, self.signer, self.verifiers,
                                      ChainHead(seq, digest), self.now, every=DEFAULT_EVERY)
        if self.made is None:
            self.refusal = AuditIntegrityError(f"refusing to sign a checkpoint: {wrong}")
            return WITHDRAWN
        insert_row(tx, audit_checkpoints, _columns(self.made))
        return replace(self.event, target=f'AuditCheckpoint::"{seq}"',
                       detail={**self.event.detail, "kid": self.made.kid,
                               "hash": self.made.hash})


def checkpoint_with_event(audit: AuditLog, keys: SignerSource, event: AuditEvent
                          ) -> Checkpoint | None:
    """Sign the chain's head with ``keys``' current key and store it, with ``event`` (an
    ``audit.checkpoint``; its target and detail filled in here) in one transaction; the
    checkpoint (one stored already at that head: no event), or None while the chain is
    empty. Raises :class:`~proctor.errors.AuditUnavailableError`: then nothing was
    stored."""
    # both may read the store: before the transaction
    signing = _Signing(keys.current_signer(), verifiers_of(keys), event.time, event)
    commit_with_event(audit, event, signing)
    return signing.made


@dataclass(slots=True)
class _Cut:
    """The segment's events deleted, its closing checkpoint stored, if its last event
    is still the one the file ends with."""

    segment: Segment
    signer: Signer
    verifiers: Mapping[str, Verifier]
    now: datetime
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        wrong = cut_segment(tx, self.segment, self.signer, self.verifiers, self.now)
        if wrong is not None:
            self.refusal = AuditIntegrityError(f"refusing to archive: {wrong}")
            return WITHDRAWN
        return None


def archive_with_event(store: Store, audit: AuditLog, path: Path, *, up_to_seq: int,
                       signer: SignerSource, verifiers: Mapping[str, Verifier],
                       event: AuditEvent, most_chunks: int | None = None) -> Segment:
    """Write the events up to ``up_to_seq`` to ``path`` (a new file), then cut them with
    ``event`` (an ``audit.archive``; its target and detail filled in here) in one
    transaction, then delete them (at most ``most_chunks`` chunks: None, all); the
    segment. Raises what :func:`~proctor.audit.write_segment` refuses,
    ``audit_integrity_failed`` (the chain moved under the file), or
    :class:`~proctor.errors.AuditUnavailableError`: then nothing was cut and the
    file is removed again. A deletion that fails once the cut has committed is logged,
    not raised: the events are archived, and the next archive deletes them
    (:func:`~proctor.audit.retention.archived_left` counts them)."""
    delete_archived(store, {**verifiers, **verifiers_of(signer)},  # an earlier one's
                    clock=audit.clock)
    segment = write_segment(store, path, up_to_seq=up_to_seq, signer=signer,
                            clock=audit.clock, verifiers=verifiers)
    shown = segment.as_json()
    event = replace(event, target=f'AuditSegment::"{segment.first}-{segment.end.seq}"',
                    detail={**event.detail, **{key: shown[key] for key in (
                        "from_seq", "to_seq", "events", "path")}})
    try:
        cutter = signer.current_signer()  # and the keys it may have signed with till now
        every_key = {**verifiers, **verifiers_of(signer)}
        commit_with_event(audit, event, _Cut(segment, cutter, every_key, event.time))
    except ProctorError:
        path.unlink(missing_ok=True)  # nothing was archived: no segment of it
        raise
    try:
        delete_archived(store, every_key, most_chunks=most_chunks, clock=audit.clock)
    except ProctorError as exc:  # archived all the same: the next archive deletes them
        log.warning("archived positions %d to %d, but deleting them failed: %s",
                    segment.first, segment.end.seq, exc.message)
    return segment
