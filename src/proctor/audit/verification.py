"""Verifying the chain: every link, every checkpoint, the head, the index and the keys.

The walk stops at the first problem and names it by position (``seq``):

- ``missing``: positions are skipped (a row was deleted);
- ``broken_link``: a row does not link to the one before it (inserted or
  reordered rows);
- ``altered``: a row's hash does not match its content (an edited row);
- ``checkpoint_mismatch``: the chain differs from a signed checkpoint (the
  tail was rewritten and re-hashed);
- ``checkpoint_invalid``: a checkpoint whose signature does not hold;
- ``checkpoint_unknown_key``: a checkpoint signed by a key no verifier knows;
- ``checkpoint_missing``: no checkpoint at a multiple of the writer's ``every`` up to
  the last event, or a checkpoint names one before it that is gone (checkpoints were
  deleted, see :mod:`proctor.audit.checkpoint_chain`);
- ``checkpoint_chain_broken``: a checkpoint does not follow the one before it (it
  starts a new chain, belongs to another log, or the one it names was replaced);
- ``cut_missing``: the chain starts after position 1 at a checkpoint of format 2, and
  no signed archive cut through that position says an archive removed the events
  before it (they were deleted);
- ``cut_invalid``: that cut's signature does not hold, or it names another hash, or
  a checkpoint the log no longer holds;
- ``checkpoint_unverifiable``: a checkpoint kept out of band lies before the first
  stored event (archived, or deleted with a new anchor signed after it): the chain
  cannot be held to it, so it is not taken as held;
- ``unanchored``: the chain starts after position 1 without a checkpoint there;
- ``truncated``: the head row or a checkpoint lies beyond the last event;
- ``index_mismatch``: a query column disagrees with the event it indexes;
- ``keys_mismatch``: the keys table (``audit_keys``, what a search by task, actor,
  time or actor type reads up to the head row's ``keyed`` mark) disagrees with the
  events' columns: an event up to the mark lacks one of its four keys (a search would
  not find it), a key
  names what its event does not, lies past the mark or at no event, or the mark lies
  past the head (the events between would never be keyed).

A chain may start at a checkpoint (older events archived, see
:mod:`proctor.audit.retention`): its first row must link to the hash of a
valid checkpoint at the position just before it, and a signed archive cut through that
position must say an archive removed them (:mod:`proctor.audit.cuts`; a cut at a
checkpoint of format 1, archived by an earlier version, has none: a note says so).
An archive deletes its events after its cut, a chunk at a time: until the last chunk,
the chain starts at events below the log's last cut, unanchored, and these must link
to each other up to the checkpoint at that cut, which holds them as it holds any
other (a note says they are still there).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import TextClause, select, text

from proctor.audit.chain import GENESIS, ChainHead, chain_hash
from proctor.audit.checkpoint_chain import DEFAULT_EVERY, chain_problem
from proctor.audit.checkpoints import Checkpoint, check_checkpoint, link_of, read_checkpoints
from proctor.audit.cuts import Cut, check_cut, read_cuts
from proctor.audit.driver import TIME_KEY, first_index_mismatch, iter_links
from proctor.errors import AuditUnavailableError, ProctorError
from proctor.keys import Verifier
from proctor.store import Store
from proctor.store.tables import audit_head

__all__ = ["ChainChecker", "Problem", "VerifyReport", "first_keys_mismatch", "verify_store",
           "with_kept"]


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    kind: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a verification found; ``problem`` is the first broken link, if any."""

    events: int
    first_seq: int | None
    last: ChainHead
    checkpoints: int
    unsigned_tail: int
    problem: Problem | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_valid(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        return {"valid": self.is_valid, "events": self.events, "first_seq": self.first_seq,
                "last_seq": self.last.seq, "last_hash": self.last.hash,
                "checkpoints": self.checkpoints, "unsigned_tail": self.unsigned_tail,
                "problem": None if self.problem is None else self.problem.as_json(),
                "notes": list(self.notes)}


class ChainChecker:
    """Checks rows fed in chain order against each other and the checkpoints.

    ``cuts`` (read only if the chain starts after position 1) let it start below an
    archive cut, at events archived and not deleted yet (see
    :mod:`proctor.audit.retention`): they are held to the checkpoint at the cut, and
    :attr:`cut_through` names that cut."""

    def __init__(self, checkpoints: Iterable[Checkpoint],
                 verifiers: Mapping[str, Verifier], *,
                 cuts: Callable[[], Mapping[int, Cut]] | None = None) -> None:
        # Only checkpoints whose signature holds are trusted; the first bad one
        # is reported unless the chain breaks earlier.
        self.checkpoints: dict[int, Checkpoint] = {}
        self.bad_checkpoint: Problem | None = None
        for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
            reason = check_checkpoint(checkpoint, verifiers)
            if reason is None:
                self.checkpoints[checkpoint.seq] = checkpoint
            elif self.bad_checkpoint is None:
                self.bad_checkpoint = Problem(checkpoint.seq, *reason)
        self.problem: Problem | None = None
        self.head: ChainHead | None = None
        self.first_seq: int | None = None
        self.events = 0
        self._cuts = cuts
        self.cut_through: int | None = None  # the chain starts below a cut there

    def feed(self, rows: Iterable[tuple[int, str, str, bytes]]) -> bool:
        """Check ``(seq, prev_hash, hash, body)`` rows; False once a problem is found."""
        if self.problem is not None:
            return False
        # The hot loop of verification: locals only, no objects per row.
        checkpoints, sha256, fromhex = self.checkpoints, hashlib.sha256, bytes.fromhex
        head_seq, head_hash = (-1, "") if self.head is None else self.head
        prev_raw = b"" if self.head is None else fromhex(head_hash)
        ok = True
        for seq, prev_hash, digest, body in rows:
            if head_seq < 0:
                anchor = self._anchor(seq, prev_hash)
                if anchor is None:
                    return False
                head_seq, head_hash = anchor
                self.first_seq, prev_raw = seq, fromhex(head_hash)
            if seq != head_seq + 1:
                gap = (f"event at position {seq - 1} is" if seq == head_seq + 2 else
                       f"events at positions {head_seq + 1} to {seq - 1} are")
                ok = self._stop(head_seq + 1, "missing", f"{gap} missing")
                break
            raw = sha256(prev_raw + body).digest()
            if raw.hex() != digest or prev_hash != head_hash:
                ok = self._diagnose(ChainHead(head_seq, head_hash), seq, prev_hash, digest, body)
                break
            if seq in checkpoints and checkpoints[seq].hash != digest:
                ok = self._stop(seq, "checkpoint_mismatch", f"event at position {seq} "
                                "differs from the signed checkpoint (the chain was rewritten)")
                break
            head_seq, head_hash, prev_raw = seq, digest, raw
            self.events += 1
        if head_seq >= 0:
            self.head = ChainHead(head_seq, head_hash)
        return ok

    def _diagnose(self, head: ChainHead, seq: int, prev_hash: str, digest: str, body: bytes
                  ) -> bool:
        if chain_hash(head.hash, body) == digest:
            return self._stop(seq, "broken_link", f"event at position {seq} records a "
                              "previous hash that is not the event before it")
        if prev_hash != head.hash and chain_hash(prev_hash, body) == digest:
            return self._stop(seq, "broken_link", f"event at position {seq} does not link "
                              f"to the event at position {head.seq} (an event was inserted, "
                              "removed or reordered there)")
        return self._stop(seq, "altered", f"event at position {seq} was altered: its "
                          "hash does not match its content")

    def _anchor(self, seq: int, prev_hash: str) -> ChainHead | None:
        if seq == 1:
            if prev_hash != GENESIS.hash:
                self._stop(1, "broken_link", "event at position 1 does not start the chain")
                return None
            return GENESIS
        anchor = self.checkpoints.get(seq - 1)
        through = max(self._cuts() if self._cuts is not None else (), default=0)
        if through >= seq and through in self.checkpoints:
            # archived, still being deleted: the first left links to what was deleted
            # before it, and the checkpoint at the cut holds every one up to it (feed);
            # the cut itself is checked as any other (verify_store)
            self.cut_through = through
            if anchor is None:
                return ChainHead(seq - 1, prev_hash)
        if anchor is None:
            self._stop(seq, "unanchored", f"the chain starts at position {seq} without a "
                       f"checkpoint at position {seq - 1}")
            return None
        if anchor.hash != prev_hash:
            self._stop(seq, "broken_link", f"event at position {seq} does not link to the "
                       f"checkpoint at position {seq - 1}")
            return None
        return ChainHead(anchor.seq, anchor.hash)

    def _stop(self, seq: int, kind: str, message: str) -> bool:
        self.problem = Problem(seq, kind, message)
        return False

    def finish(self, expected_head: ChainHead | None) -> None:
        """Check the end of the chain against the head row (if known) and the checkpoints."""
        if self.problem is not None:
            return
        last = self.head
        if last is None:
            end = 0 if expected_head is None else expected_head.seq
            beyond = [seq for seq in self.checkpoints if seq > end]
            if beyond:  # every event deleted, the head row with them or rewound
                self._stop(end + 1, "truncated", f"no events, but a checkpoint at position "
                           f"{min(beyond)}")
                return
            if expected_head is None or expected_head.seq == 0:
                return
            anchor = self.checkpoints.get(expected_head.seq)
            if anchor is None or anchor.hash != expected_head.hash:
                self._stop(1, "truncated", f"no events, and no checkpoint for the head at "
                           f"position {expected_head.seq}")
            return
        if expected_head is not None and expected_head != last:
            self._stop(last.seq + 1, "truncated", f"the chain ends at position {last.seq} "
                       f"but the head is at position {expected_head.seq}")
            return
        beyond = [seq for seq in self.checkpoints if seq > last.seq]
        if beyond:
            self._stop(last.seq + 1, "truncated", f"the chain ends at position {last.seq} "
                       f"before the checkpoint at position {min(beyond)}")

    def report(self, *, also: Problem | None = None, notes: tuple[str, ...] = ()
               ) -> VerifyReport:
        """The result; the earliest of the chain's, the checkpoints' and ``also``'s problems."""
        last = self.head or GENESIS
        signed = [seq for seq in self.checkpoints if seq <= last.seq]
        tail = last.seq - max(signed) if signed else self.events
        found = [p for p in (self.problem, self.bad_checkpoint, also) if p is not None]
        first = min(found, key=lambda p: p.seq) if found else None
        return VerifyReport(self.events, self.first_seq, last,
                            len(self.checkpoints), max(tail, 0), first, notes)


# One statement, so one snapshot on either database whatever a writer commits meanwhile:
# the mark and the head, the first event up to the mark without all four of its keys (a
# look-up in the keys' primary key each), the keys and the events up to the mark counted.
# With every event keyed, the keys are exactly theirs if there are four times as many.
# `{time}`: the event's time as its `w` key (proctor.audit.driver.TIME_KEY).
_KEYS_CHECK = (
    "WITH m AS (SELECT coalesce(max(keyed), 0) AS mark, coalesce(max(seq), 0) AS head "
    "FROM audit_head WHERE id = 1) "
    "SELECT m.mark, m.head, "
    "(SELECT min(e.seq) FROM audit_events e WHERE e.seq <= m.mark AND ("
    "NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 't' AND k.key = e.task "
    "AND k.seq = e.seq) OR "
    "NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 'a' AND k.key = e.actor_id "
    "AND k.seq = e.seq) OR "
    "NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 'y' AND k.key = e.actor_type "
    "AND k.seq = e.seq) OR "
    "NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 'w' AND k.key = {time} "
    "AND k.seq = e.seq))), "
    "(SELECT count(*) FROM audit_keys), "
    "(SELECT count(*) FROM audit_events e WHERE e.seq <= m.mark) "
    "FROM m")
# Only when the counts differ: the first key past the mark or not its event's.
_STRAY_KEY = (
    "WITH m AS (SELECT coalesce(max(keyed), 0) AS mark FROM audit_head WHERE id = 1) "
    "SELECT k.seq, k.kind, m.mark FROM audit_keys k, m WHERE k.seq > m.mark OR NOT EXISTS ("
    "SELECT 1 FROM audit_events e WHERE e.seq = k.seq AND k.key = "
    "CASE k.kind WHEN 't' THEN e.task WHEN 'a' THEN e.actor_id WHEN 'y' THEN e.actor_type "
    "WHEN 'w' THEN {time} END) "
    "ORDER BY k.seq LIMIT 1")
_MISSING_KIND = (
    "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 't' "
    "AND k.key = e.task AND k.seq = e.seq) THEN 't' "
    "WHEN NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 'a' "
    "AND k.key = e.actor_id AND k.seq = e.seq) THEN 'a' "
    "WHEN NOT EXISTS (SELECT 1 FROM audit_keys k WHERE k.kind = 'y' "
    "AND k.key = e.actor_type AND k.seq = e.seq) THEN 'y' ELSE 'w' END "
    "FROM audit_events e WHERE e.seq = :seq")
_KINDS = {"t": "task", "a": "actor", "y": "actor type", "w": "time"}


@functools.cache
def _keys_sql(is_sqlite: bool) -> tuple[TextClause, TextClause, TextClause]:
    """The keys' three checks, with the time key's expression of the database."""
    return tuple(text(sql.format(time=TIME_KEY[is_sqlite]))  # type: ignore[return-value]
                 for sql in (_KEYS_CHECK, _STRAY_KEY, _MISSING_KIND))


def first_keys_mismatch(store: Store) -> Problem | None:
    """The first disagreement of the keys table with the events' columns (a
    ``keys_mismatch``), or None; a keys table that cannot be read is one too."""
    try:  # one snapshot: a deletion chunk or a batch between two statements is not seen
        with store.snapshot() as conn:
            keys_check, stray_key, missing_kind = _keys_sql(store.backend == "sqlite")
            mark, head, missing, keys, keyed = conn.execute(keys_check).one()
            if mark > head:
                return Problem(head + 1, "keys_mismatch", f"the keys' mark at position {mark} "
                               f"lies past the head at position {head}: events written up to "
                               "it would never be keyed, and no search by their keys "
                               "would find them")
            if missing is not None:
                kind = _KINDS[str(conn.execute(missing_kind, {"seq": missing}).scalar())]
                return Problem(missing, "keys_mismatch", f"the keys table lacks the {kind} "
                               f"key of the event at position {missing}: a search by its "
                               f"{kind} would not find it")
            if keys == len(_KINDS) * keyed:
                return None
            stray = conn.execute(stray_key).first()
    except ProctorError as exc:
        return Problem(1, "keys_mismatch", f"the keys table cannot be read: {exc.message}")
    if stray is None:  # not found again: the table changed under the check
        return Problem(mark + 1, "keys_mismatch", f"the keys table holds {keys} keys for "
                       f"{keyed} events up to position {mark}, not four each")
    seq, kind, mark = stray
    where = (f"past the keys' mark at position {mark}" if seq > mark
             else "that the event there does not have")
    return Problem(int(seq), "keys_mismatch", f"the keys table holds a "
                   f"{_KINDS.get(kind, 'unknown kind of')} key at position {seq} {where}")


def with_kept(stored: list[Checkpoint], kept: Sequence[Checkpoint],
               verifiers: Mapping[str, Verifier]) -> tuple[list[Checkpoint], Problem | None]:
    """The store's checkpoints with those kept out of band in place of any at their
    positions (they are the reference), and the first problem the kept ones show on
    their own: a signature that does not hold, or a stored checkpoint that differs.
    A stored checkpoint is checked before a kept one takes its place: a kept copy
    never hides a stored one whose signature or row was tampered with."""
    problem: Problem | None = None
    by_seq = {c.seq: c for c in stored}
    logs = (link_of(c).log for c in stored if check_checkpoint(c, verifiers) is None)
    log = next((found for found in logs if found is not None), None) if kept else None
    for checkpoint in sorted(kept, key=lambda c: c.seq):
        reason = check_checkpoint(checkpoint, verifiers)
        ours = by_seq.get(checkpoint.seq)
        theirs = None if reason is not None else link_of(checkpoint).log
        if reason is not None:
            found = Problem(checkpoint.seq, reason[0], f"kept {reason[1]}")
        elif log is not None and theirs is not None and theirs != log:
            found = Problem(checkpoint.seq, "checkpoint_mismatch", f"the checkpoint kept out "
                            f"of band at position {checkpoint.seq} belongs to log `{theirs}`, "
                            f"the stored checkpoints to log `{log}` (the log was replaced)")
        elif ours is not None and ours.hash != checkpoint.hash:
            found = Problem(checkpoint.seq, "checkpoint_mismatch", f"the stored checkpoint "
                            f"at position {checkpoint.seq} differs from the one kept out of "
                            "band (the chain was rewritten and signed again)")
        elif ours is not None and (stored_reason := check_checkpoint(ours, verifiers)):
            found = Problem(checkpoint.seq, *stored_reason)
        else:
            by_seq[checkpoint.seq] = checkpoint
            continue
        if problem is None or found.seq < problem.seq:
            problem = found
    return sorted(by_seq.values(), key=lambda c: c.seq), problem


def _unverifiable(kept: Sequence[Checkpoint], checker: ChainChecker,
                  head: ChainHead | None) -> Problem | None:
    """The first kept checkpoint the chain cannot be held to: one before the position
    the stored chain starts after (its first event's anchor, or with no events the
    head's checkpoint). Such a position was archived, or deleted by someone who signed
    a new anchor after it; either way the store cannot show it still holds."""
    start = (checker.first_seq - 1 if checker.first_seq is not None
             else head.seq if head is not None else 0)
    before = sorted(c.seq for c in kept if c.seq < start)
    if not before:
        return None
    return Problem(before[0], "checkpoint_unverifiable", f"the checkpoint kept out of band "
                   f"at position {before[0]} lies before the stored chain, which starts "
                   f"after position {start}: it cannot be held to the chain (verify the "
                   "archived segment that covers it with `--archive` and `--checkpoint`)")


def cut_problem(checker: ChainChecker, head: ChainHead | None,
                 cuts: Callable[[], Mapping[int, Cut]], verifiers: Mapping[str, Verifier]
                 ) -> tuple[Problem | None, str | None]:
    """Whether an archive cut the chain where it starts: the problem (``cut_missing``,
    ``cut_invalid``) or a note (a cut by an earlier version, which signed none).
    Checked by :func:`verify_store`, and by an archive before it signs a cut
    (:func:`~proctor.audit.retention.write_segment`): a cut signed over a log whose
    oldest events were deleted without one would vouch for the deletion."""
    if checker.cut_through is not None:
        through = checker.cut_through  # the events left below it are being deleted
    elif checker.first_seq is not None:
        through = checker.first_seq - 1
    elif checker.problem is None and head is not None:
        through = head.seq  # every event archived
    else:
        return None, None
    anchor = checker.checkpoints.get(through)
    if through < 1 or anchor is None:
        return None, None  # the chain starts at 1, or is unanchored (found already)
    if link_of(anchor).version < 2:
        return None, (f"the events up to position {through} were archived by an earlier "
                      "version, which signed no archive cut")
    cut = cuts().get(through)  # read only where needed: most chains start at position 1
    at = through + 1
    if cut is None:
        return Problem(at, "cut_missing", f"the events up to position {through} are gone "
                       "without a signed archive cut (`proctor audit archive` signs one): "
                       "they were deleted"), None
    wrong = check_cut(cut, verifiers, checker.checkpoints)
    if wrong is None and cut.hash != anchor.hash:
        wrong = (f"the archive cut through position {through} names another hash than "
                 "its checkpoint")
    return (None if wrong is None else Problem(at, "cut_invalid", wrong)), None


def verify_store(store: Store, verifiers: Mapping[str, Verifier],
                 kept: Sequence[Checkpoint] = (), *,
                 checkpoint_every: int = DEFAULT_EVERY) -> VerifyReport:
    """Walk the whole chain in ``store``; ``verifiers`` by key id check the checkpoints.

    ``checkpoint_every`` is the writer's spacing of checkpoints, for the events before a
    log's first checkpoint and after a last one that states none; every other gap is
    checked against the spacing its checkpoint signed.

    ``kept`` are checkpoints kept out of band (``proctor audit checkpoint --json`` on a
    schedule): the chain must hold each of them, which shows a tail deleted with its
    checkpoints (``truncated``) or a chain rewritten by someone who can sign
    (``checkpoint_mismatch``), which the store alone cannot.
    """
    # The index and keys checks run inside the database while Python walks the links.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="proctor-verify") as pool:
        index_check = pool.submit(first_index_mismatch, store)
        keys_check = pool.submit(first_keys_mismatch, store)
        try:
            # The head, the checkpoints, the cuts and every page of the walk read in one
            # snapshot: read apart, a deletion chunk committed between two pages was a
            # gap (`missing`), and events appended meanwhile lay past checkpoints read
            # before them (`checkpoint_missing`) or a head read after them (`truncated`)
            with store.snapshot() as conn:
                head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                                    .where(audit_head.c.id == 1)).first()
                checkpoints, kept_problem = with_kept(read_checkpoints(conn), kept, verifiers)
                # read only if the chain starts after position 1, or has no events
                cuts = functools.cache(lambda: read_cuts(conn))
                checker = ChainChecker(checkpoints, verifiers, cuts=cuts)
                for rows in iter_links(conn):
                    if not checker.feed(rows):
                        break
                if checker.first_seq is None and head is not None and int(head.seq) > 0:
                    cuts()  # every event archived: the cut is checked below
        except ProctorError:
            raise
        except Exception as exc:
            raise AuditUnavailableError(
                f"cannot read the audit log: {type(exc).__name__}") from exc
        if head is None and checker.head is not None and checker.problem is None:
            checker.problem = Problem(checker.head.seq + 1, "truncated",
                                      "the head row is missing")
        expected = None if head is None else ChainHead(int(head.seq), head.hash)
        checker.finish(expected)
        unverifiable = _unverifiable(kept, checker, expected)
        if unverifiable is not None and (kept_problem is None
                                         or unverifiable.seq < kept_problem.seq):
            kept_problem = unverifiable
        last_seq = (checker.head.seq if checker.head is not None
                    else expected.seq if expected is not None else 0)
        broken = chain_problem(sorted(checker.checkpoints.values(), key=lambda c: c.seq),
                               last_seq=last_seq, every=checkpoint_every)
        if broken is not None and checker.bad_checkpoint is not None \
                and broken[0] >= checker.bad_checkpoint.seq:
            broken = None  # a checkpoint left out for its signature is reported as such
        cut_problem_, cut_note = cut_problem(checker, expected, cuts, verifiers)
        for found in (None if broken is None else Problem(*broken), cut_problem_):
            if found is not None and (kept_problem is None or found.seq < kept_problem.seq):
                kept_problem = found
        if kept_problem is not None and (checker.problem is None
                                         or kept_problem.seq < checker.problem.seq):
            checker.problem = kept_problem
        try:
            mismatch = index_check.result()
        except ProctorError:
            # Bodies that are not JSON make the check itself fail; the walk
            # reports such rows as altered, so only speak up when it found nothing.
            mismatch = None if checker.problem is not None else (checker.first_seq or 1)
        keys = keys_check.result()
    also = None
    if mismatch is not None:
        also = Problem(mismatch, "index_mismatch", f"the query columns of the event at "
                       f"position {mismatch} do not match its content")
    # an edited column disagrees with its keys too: the index's finding comes first
    if keys is not None and (also is None or keys.seq < also.seq):
        if keys.seq == 1 and checker.first_seq is not None:
            keys = Problem(checker.first_seq, keys.kind, keys.message)
        also = keys
    notes: tuple[str, ...] = () if cut_note is None else (cut_note,)
    if checker.cut_through is not None and checker.first_seq is not None:
        notes += (f"the events from position {checker.first_seq} to {checker.cut_through} "
                  "were archived and are not all deleted yet (the next archive deletes "
                  "them)",)
    if checker.checkpoints == {} and checker.events:
        notes += ("no valid signed checkpoint covers this chain",)
    return checker.report(also=also, notes=notes)
