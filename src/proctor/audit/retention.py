"""Retention that keeps verification possible: archived segments.

:func:`archive_segment` moves the events up to a position into a JSON Lines
file and deletes them from the database. The file's first line names the
checkpoint the segment starts after (none for position 1) and the checkpoint
at its last event, signed now if there was none (chained after the log's last
checkpoint, so only at or past it); the events follow in the export format (their
task and actor keys go with them). The database keeps every checkpoint, so its chain
now starts at a checkpoint.

The archive is two steps. :func:`cut_segment`, in one small transaction (the audit
writer's, with the operator's event), stores a signed archive *cut* through the last of
them (:mod:`proctor.audit.cuts`), made only if the log's last checkpoint still holds;
:func:`~proctor.audit.verification.verify_store` requires it of a chain that starts
after position 1. Then :func:`delete_archived`, outside that transaction and on
connections of its own, deletes the events the cut covers and their keys, a few
thousand per transaction, oldest first. Deleting them all in the writer's transaction
held every decision's write behind it (SQLite's write lock, the writer's batch on either
database) for as long as the delete took, and on PostgreSQL a log of millions of events
outlasted the writer's ``statement_timeout`` every time: nothing was ever archived.
Until the last chunk commits, the events below the cut that are left verify as they
are (linked to each other up to the checkpoint at the cut); a process that stops
between two chunks leaves such a log, and the next archive (or
:func:`delete_archived` on its own) finishes it.
:func:`verify_archive` checks a segment file on its own.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from proctor.audit.chain import ChainHead, canonical_json
from proctor.audit.checkpoint_chain import (
    connection_fetch,
    continue_from,
    first_missing,
    insert_checkpoint,
    sign_after,
)
from proctor.audit.checkpoints import (
    Checkpoint,
    digest_of,
    link_of,
    load_checkpoints,
    read_checkpoints,
)
from proctor.audit.cuts import Cut, check_cut, insert_cut, read_cuts, sign_cut
from proctor.audit.driver import TIME_KEY, WriteCursor, iter_links
from proctor.audit.query import iter_events
from proctor.audit.verification import (
    ChainChecker,
    Problem,
    VerifyReport,
    cut_problem,
    with_kept,
)
from proctor.clock import Clock, SystemClock
from proctor.documents import MAX_DEPTH, parse_json
from proctor.errors import AuditError, AuditIntegrityError, DocumentError
from proctor.keys import Signer, SignerSource, Verifier
from proctor.store import Store

__all__ = ["DELETE_CHUNK", "SEGMENT_TYPE", "Segment", "archive_segment", "archived_left",
           "cut_segment", "delete_archived", "verify_archive", "write_segment"]

log = logging.getLogger(__name__)

SEGMENT_TYPE = "proctor.audit.segment"
_MAX_LINE_BYTES = 16 << 20
# an event holds a call's arguments (themselves capped at MAX_DEPTH) a few levels down
_MAX_LINE_DEPTH = 2 * MAX_DEPTH
DELETE_CHUNK = {"sqlite": 2_000, "postgresql": 10_000}
"""Archived events deleted per transaction (:func:`delete_archived`): on SQLite each
chunk holds the database's write lock, which every decision's write waits for."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment file written (:func:`write_segment`), its events not deleted yet:
    positions ``first`` to ``end.seq``, closed by ``closing`` (stored already, or to
    store with the cut)."""

    path: Path
    first: int
    end: ChainHead
    closing: Checkpoint

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "from_seq": self.first, "to_seq": self.end.seq,
                "events": self.end.seq - self.first + 1}


def archive_segment(store: Store, path: Path, *, up_to_seq: int, signer: SignerSource,
                    clock: Clock, verifiers: Mapping[str, Verifier]) -> dict[str, Any]:
    """Write events up to ``up_to_seq`` to ``path`` (a new file), then cut and delete
    them (:func:`write_segment`, :func:`cut_segment` in a transaction of its own, then
    :func:`delete_archived`; an operator's archive is cut with its event:
    :mod:`proctor.oversight.milestones`)."""
    delete_archived(store, verifiers, clock=clock)  # an earlier archive's, left by a crash
    segment = write_segment(store, path, up_to_seq=up_to_seq, signer=signer, clock=clock,
                            verifiers=verifiers)
    cutter = signer.current_signer()  # before the transaction: it may read the store
    with store.transaction() as conn:
        is_sqlite = store.backend == "sqlite"
        if not is_sqlite:  # the head locked, as the writer's transaction has it
            conn.exec_driver_sql("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
        driver = conn.connection.driver_connection
        assert driver is not None  # a connection checked out for this transaction
        tx = WriteCursor(driver.cursor(), is_sqlite=is_sqlite)
        wrong = cut_segment(tx, segment, cutter, verifiers, clock.now())
    if wrong is not None:
        raise AuditIntegrityError(f"refusing to archive: {wrong}")
    delete_archived(store, verifiers, clock=clock)
    return segment.as_json()


def write_segment(store: Store, path: Path, *, up_to_seq: int, signer: SignerSource,
                  clock: Clock, verifiers: Mapping[str, Verifier]) -> Segment:
    """Write events up to ``up_to_seq`` to ``path`` (a new file); nothing is deleted.

    ``signer`` signs the checkpoint at ``up_to_seq`` if there is none yet (the segment's
    closing checkpoint, chained after the log's last, stored with the cut: so it is
    refused, :class:`AuditError`, before the last checkpoint; archive up to a
    checkpoint's position, or past the last); ``verifiers`` (by key id) check the
    chain's checkpoints first.

    Refuses (:class:`AuditIntegrityError`) if that part of the chain does not verify
    (with where it starts: a chain that starts after position 1 without the signed cut
    verify requires there, ``cut_missing`` or ``cut_invalid``, is refused, so the cut
    signed now never vouches for events deleted without one), or the log's last
    checkpoint does not hold (see
    :func:`~proctor.audit.checkpoint_chain.continue_from`).
    """
    with store.snapshot() as conn:  # one snapshot, as verify_store's walk
        checkpoints = read_checkpoints(conn)
        cuts = functools.cache(lambda: read_cuts(conn))
        checker = ChainChecker(checkpoints, verifiers, cuts=cuts)
        for rows in iter_links(conn):
            if (not checker.feed([r for r in rows if r[0] <= up_to_seq])
                    or rows[-1][0] >= up_to_seq):
                break
        # where the chain starts, as verify_store holds it: events deleted without a
        # cut (`cut_missing`) are refused, never covered by this archive's cut
        uncut, _ = cut_problem(checker, None, cuts, verifiers)
    report = checker.report(also=uncut)
    if report.problem is not None:
        raise AuditIntegrityError(f"refusing to archive: {report.problem.message}")
    if checker.cut_through is not None:  # another archive is deleting them right now
        raise AuditError(f"the events up to position {checker.cut_through} were archived "
                         "and are being deleted: archive again once they are gone")
    if checker.head is None or checker.head.seq != up_to_seq or checker.first_seq is None:
        raise AuditError(f"there is no event at position {up_to_seq} to archive up to")
    first, end = checker.first_seq, checker.head
    by_seq = {c.seq: c for c in checkpoints}
    closing = by_seq.get(end.seq) or _closing(store, signer, clock, end, verifiers)
    header = {"type": SEGMENT_TYPE, "v": 1, "from_seq": first, "to_seq": end.seq,
              "anchor": by_seq[first - 1].as_json() if first > 1 else None,
              "checkpoint": closing.as_json()}
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(json.dumps(header, sort_keys=True) + "\n")
            for stored in iter_events(store):
                if stored.seq > end.seq:
                    break
                handle.write(json.dumps(stored.as_json(), sort_keys=True,
                                        ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise AuditError(f"cannot write segment `{path}`: {exc.strerror}") from exc
    return Segment(path, first, end, closing)


def _closing(store: Store, keys: SignerSource, clock: Clock, end: ChainHead,
             verifiers: Mapping[str, Verifier]) -> Checkpoint:
    """A new checkpoint at ``end``, chained after the log's last one (stored at the cut)."""
    signer = keys.current_signer()  # before the transaction: it may read the store
    with store.reading() as conn:
        fetch = connection_fetch(conn, store.backend == "sqlite")
        last = fetch("SELECT max(seq) FROM audit_checkpoints", ())[0][0]
        if last is not None and int(last) > end.seq:
            raise AuditError(f"position {end.seq} has no checkpoint and lies before the last "
                             f"one, at position {last}: archive up to a checkpoint's "
                             "position, or past the last")
        signed, wrong = sign_after(fetch, signer, verifiers, end, clock.now(), every=0)
    if signed is None:
        raise AuditIntegrityError(f"refusing to archive: {wrong}")
    return signed


_HASH_AT = "SELECT hash FROM audit_events WHERE seq = {p}"
_PAYLOAD_AT = "SELECT payload FROM audit_checkpoints WHERE seq = {p}"
_HEAD = "SELECT seq FROM audit_head WHERE id = 1"


def cut_segment(tx: WriteCursor, segment: Segment, signer: Signer,
                verifiers: Mapping[str, Verifier], now: datetime) -> str | None:
    """Delete ``segment``'s events and their keys in ``tx`` (a transaction that holds the
    head), with its closing checkpoint unless stored already and a signed archive cut
    through its last event; why nothing was cut (None: cut). Nothing is cut unless the
    segment's last event is still the one the file ends with, its closing checkpoint
    (if new) still follows the log's last, and the log's last checkpoint holds."""
    end, closing = segment.end, segment.closing
    found = tx.rows(_HASH_AT + tx.for_share, [end.seq])
    if not found or found[0][0] != end.hash:
        return (f"the event at position {end.seq} was archived or changed while its "
                "segment was written: nothing archived")
    head = int(tx.rows(_HEAD)[0][0])
    stored = tx.rows(_PAYLOAD_AT, [end.seq])
    if not stored:  # signed for the file after the then-last checkpoint
        last, wrong = continue_from(tx.rows, verifiers, at=end.seq, every=0)
        if wrong is not None:
            return wrong
        if link_of(closing).prev != (None if last is None else (last.seq, digest_of(last))):
            return (f"a checkpoint was signed after the segment's closing one, at position "
                    f"{end.seq}: nothing archived (archive again)")
        due = first_missing(end.seq, head + 1, link_of(closing).every)
        if due is not None:
            return f"no checkpoint at position {due} (checkpoints were deleted)"
        insert_checkpoint(tx.execute, closing, tx.time(closing.signed_at))
        last = closing
    elif stored[0][0] != closing.payload:
        return f"the checkpoint at position {end.seq} changed while its segment was written"
    else:
        last, wrong = continue_from(tx.rows, verifiers, at=head + 1, every=0)
        if wrong is not None:
            return wrong
        assert last is not None  # the closing checkpoint, or one after it
    insert_cut(tx.execute, sign_cut(signer, end.seq, end.hash, last, now))
    return None  # the events are deleted after the commit: delete_archived


# the log's last cut, and its first event: something to delete if at or below the cut
_LAST_CUT = ("SELECT through, hash, kid, payload, signature, "
             "(SELECT min(seq) FROM audit_events) FROM audit_cuts "
             "ORDER BY through DESC LIMIT 1")
_FIRST = "SELECT min(seq) FROM audit_events"
# An event's four keys, found by the keys' primary key (kind, key, seq) from the event's
# own columns, as the writer made them (proctor.audit.driver): never a scan of the keys
# table, four times the size of the events'. One statement per kind: SQLite looks a
# kind's (key, seq) pairs up in the primary key, but scans the table for a union of
# (kind, key, seq) triples.
_KEY_OF = (("t", "{e}task"), ("a", "{e}actor_id"), ("y", "{e}actor_type"),
           ("w", "{time}"))
_PG_KEY = ("DELETE FROM audit_keys k USING audit_events e WHERE e.seq >= %s AND e.seq <= %s "
           "AND k.kind = '{kind}' AND k.key = {column} AND k.seq = e.seq")
_SQLITE_KEY = ("DELETE FROM audit_keys WHERE kind = '{kind}' AND (key, seq) IN ("
               "SELECT {column}, seq FROM audit_events WHERE seq >= ? AND seq <= ?)")
_DELETE_KEYS = {
    "postgresql": tuple(_PG_KEY.format(kind=kind, column=column.format(
        e="e.", time=TIME_KEY[False].replace("(time ", "(e.time "))) for kind, column in _KEY_OF),
    "sqlite": tuple(_SQLITE_KEY.format(kind=kind, column=column.format(
        e="", time=TIME_KEY[True])) for kind, column in _KEY_OF),
}
# PostgreSQL's planner hashes a whole kind of keys (a million rows for a million
# events) rather than look up a chunk's ten thousand in the primary key, whose three
# columns the join gives: 1.5 s a chunk and a kind on a million events, 0.25 s so
_BY_LOOK_UP = ("SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off")
_DELETE_EVENTS = "DELETE FROM audit_events WHERE seq >= {p} AND seq <= {p}"


def delete_archived(store: Store, verifiers: Mapping[str, Verifier], *,
                    chunk: int | None = None, most_chunks: int | None = None,
                    clock: Clock | None = None) -> int:
    """Delete the events the log's last archive cut covers, with their keys, ``chunk``
    events per transaction (:data:`DELETE_CHUNK`), oldest first, on the store's own
    connections: never in the audit writer's transaction. Stops after ``most_chunks``
    (None: once none is left); the number of events deleted.

    Nothing is deleted unless the cut's signature holds (``verifiers``, by key id), it
    was signed after a checkpoint the log holds, and the event at its position, if still
    there, has the hash it names (:class:`AuditIntegrityError` otherwise). Each chunk
    leaves a log that verifies: the events left below the cut still link up to it.
    On SQLite each chunk holds the write lock; the next waits as long as it held it,
    so a decision's write gets the lock in between.
    """
    cut = _cut_left(store)
    if cut is None:  # nothing archived is left: the usual case, one small read
        return 0
    _check_before_deleting(store, cut, verifiers)
    size = chunk or DELETE_CHUNK[store.backend]
    is_sqlite = store.backend == "sqlite"
    mark = "?" if is_sqlite else "%s"
    clock = clock or SystemClock()
    deleted = chunks = 0
    while most_chunks is None or chunks < most_chunks:
        started = clock.monotonic()
        with store.transaction() as conn:
            first = conn.exec_driver_sql(_FIRST).scalar()
            if first is None or int(first) > cut.through:
                break
            low, high = int(first), min(int(first) + size - 1, cut.through)
            if not is_sqlite:  # a key's look-up per event, never a scan of a kind's keys
                for setting in _BY_LOOK_UP:
                    conn.exec_driver_sql(setting)
            for sql in _DELETE_KEYS[store.backend]:
                conn.exec_driver_sql(sql, (low, high))
            deleted += conn.exec_driver_sql(_DELETE_EVENTS.replace("{p}", mark),
                                            (low, high)).rowcount
        chunks += 1
        if is_sqlite:  # as long as the chunk held the lock, for the writers waiting
            time.sleep(min(max(clock.monotonic() - started, 0.0), 1.0))
    if deleted:
        log.info("deleted %d archived audit events (through position %d)", deleted,
                 cut.through)
    return deleted


def archived_left(store: Store) -> int:
    """How many events the log's last archive cut covers that are not deleted yet."""
    with store.reading() as conn:
        return int(conn.exec_driver_sql(_LEFT).scalar() or 0)


_LEFT = ("SELECT count(*) FROM audit_events "
         "WHERE seq <= (SELECT max(through) FROM audit_cuts)")


def _cut_left(store: Store) -> Cut | None:
    """The log's last archive cut, if any event it covers is left."""
    with store.reading() as conn:
        row = conn.exec_driver_sql(_LAST_CUT).first()
    if row is None or row[5] is None or int(row[5]) > int(row[0]):
        return None
    return Cut(int(row[0]), *(str(v) for v in row[1:5]))


def _check_before_deleting(store: Store, cut: Cut, verifiers: Mapping[str, Verifier]
                           ) -> None:
    """Refuse to delete under a cut that does not hold (a row nobody signed)."""
    wrong = check_cut(cut, verifiers, {c.seq: c for c in load_checkpoints(store)})
    if wrong is None:
        with store.reading() as conn:
            found = conn.exec_driver_sql(_HASH_AT.replace(
                "{p}", "?" if store.backend == "sqlite" else "%s"), (cut.through,)).first()
        if found is not None and str(found[0]) != cut.hash:
            wrong = (f"the event at position {cut.through} does not have the hash the "
                     "archive cut through it names")
    if wrong is not None:
        raise AuditIntegrityError(f"refusing to delete archived events: {wrong}")


def _line(handle: BinaryIO, path: Path, number: int) -> Any:
    """The JSON value of the segment's next line, None at its end."""
    raw = handle.readline(_MAX_LINE_BYTES + 1)
    if not raw:
        return None
    try:
        return parse_json(raw, what=f"line {number} of audit segment `{path}`",
                          max_bytes=_MAX_LINE_BYTES, max_depth=_MAX_LINE_DEPTH)
    except DocumentError as exc:
        raise AuditError(exc.message) from exc


def _link(item: Any, path: Path, number: int) -> tuple[int, str, str, bytes]:
    """The link of one line of a segment, read to its shape: a string or a float for the
    position, a number for a hash, are refused (:class:`AuditError`), never converted."""
    where = f"line {number} of audit segment `{path}`"
    if not isinstance(item, dict):
        raise AuditError(f"{where} is not an event")
    seq, prev_hash, digest, event = (item.get("seq"), item.get("prev_hash"),
                                     item.get("hash"), item.get("event"))
    if type(seq) is not int or seq < 1:
        raise AuditError(f"{where} has a `seq` that is not a whole number from 1")
    if not isinstance(prev_hash, str) or not isinstance(digest, str):
        raise AuditError(f"{where} has a `prev_hash` or `hash` that is not a string")
    if not isinstance(event, dict):
        raise AuditError(f"{where} has an `event` that is not an object")
    return seq, prev_hash, digest, canonical_json(event)


def verify_archive(path: Path, verifiers: Mapping[str, Verifier],
                   kept: Sequence[Checkpoint] = ()) -> VerifyReport:
    """Verify an archived segment file against its own checkpoints and ``kept`` (kept out
    of band): the events must be exactly those its header names, ``from_seq`` to
    ``to_seq`` (none at all, or fewer, is ``truncated``), and every kept checkpoint must
    lie within the segment (``checkpoint_unverifiable`` otherwise) and be held by it."""
    try:
        with path.open("rb") as handle:
            header = _line(handle, path, 1)
            if not isinstance(header, dict) or header.get("type") != SEGMENT_TYPE:
                raise AuditError(f"`{path}` is not an audit segment")
            closing = Checkpoint.from_json(header.get("checkpoint"),
                                           what=f"the closing checkpoint of `{path}`")
            anchors = [closing]
            if header.get("anchor") is not None:
                anchors.append(Checkpoint.from_json(header["anchor"],
                                                    what=f"the anchor of `{path}`"))
            from_seq, to_seq = header.get("from_seq"), header.get("to_seq")
            if (type(from_seq) is not int or type(to_seq) is not int or from_seq < 1
                    or to_seq != closing.seq or from_seq > to_seq
                    or (from_seq == 1) != (header.get("anchor") is None)
                    or (from_seq > 1 and anchors[1].seq != from_seq - 1)):
                raise AuditError(f"the header of audit segment `{path}` does not name its "
                                 "positions (`from_seq`, `to_seq`) by its checkpoints")
            held, kept_problem = with_kept(anchors, [c for c in kept
                                                      if from_seq - 1 <= c.seq <= to_seq],
                                            verifiers)
            checker = ChainChecker(held, verifiers)
            for number in itertools.count(2):
                item = _line(handle, path, number)
                if item is None:
                    break
                link = _link(item, path, number)
                if number == 2 and link[0] != from_seq:
                    checker.problem = Problem(from_seq, "missing", f"the segment names its "
                                              f"first event at position {from_seq}, but its "
                                              f"first line holds position {link[0]}")
                    break
                if not checker.feed([link]):
                    break
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"cannot read audit segment `{path}`: {exc}") from exc
    if checker.problem is None and checker.head is None:
        checker.problem = Problem(from_seq, "truncated", f"the segment holds no events, "
                                  f"but names positions {from_seq} to {to_seq}")
    checker.finish(ChainHead(closing.seq, closing.hash))
    outside = sorted(c.seq for c in kept if not from_seq - 1 <= c.seq <= to_seq)
    if outside and (kept_problem is None or outside[0] < kept_problem.seq):
        kept_problem = Problem(outside[0], "checkpoint_unverifiable", f"the checkpoint "
                               f"kept out of band at position {outside[0]} lies outside "
                               f"the segment (positions {from_seq} to {to_seq})")
    return checker.report(also=kept_problem)
