"""Archived segments carry their checkpoints; a chain may start at a checkpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proctor.audit import (
    AuditLog,
    archive_segment,
    load_checkpoints,
    verifiers_for,
    verify_archive,
    verify_store,
)
from proctor.clock import FrozenClock
from proctor.errors import AuditError, AuditIntegrityError
from proctor.keys import LocalSigner
from proctor.store import Store
from tests.audit.helpers import agent_event, execute, record_many


def test_archiving_keeps_both_parts_verifiable(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path
) -> None:
    record_many(audit, clock, 15)
    keys = verifiers_for([signer])
    first = archive_segment(store, tmp_path / "one.jsonl", up_to_seq=15, signer=signer,
                            clock=clock, verifiers=keys)
    assert (first["from_seq"], first["to_seq"], first["events"]) == (1, 15, 15)
    assert 15 in [c.seq for c in load_checkpoints(store)]  # signed for the cut
    record_many(audit, clock, 10)  # the writer's checkpoint at 20 follows the one at 15
    report = verify_store(store, keys)
    assert report.is_valid, report.problem
    assert (report.first_seq, report.events) == (16, 10)
    assert verify_archive(tmp_path / "one.jsonl", keys).is_valid

    record_many(audit, clock, 5)  # the log goes on after the cut
    second = archive_segment(store, tmp_path / "two.jsonl", up_to_seq=20, signer=signer,
                             clock=clock, verifiers=keys)
    assert (second["from_seq"], second["to_seq"]) == (16, 20)
    two = verify_archive(tmp_path / "two.jsonl", keys)
    assert two.is_valid and two.first_seq == 16
    assert verify_store(store, keys).is_valid


def test_a_chain_that_starts_without_a_checkpoint_does_not_verify(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    record_many(audit, clock, 8)
    execute(store, "DELETE FROM audit_events WHERE seq <= 3")
    report = verify_store(store, verifiers_for([signer]))
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (4, "unanchored")


def _archived(audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner,
              tmp_path: Path) -> Path:
    """A segment of the first 12 events."""
    record_many(audit, clock, 12)
    path = tmp_path / "seg.jsonl"
    archive_segment(store, path, up_to_seq=12, signer=signer, clock=clock,
                    verifiers=verifiers_for([signer]))
    return path


def test_a_tampered_segment_file_is_detected(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path
) -> None:
    path = _archived(audit, store, clock, signer, tmp_path)
    lines = path.read_text().splitlines()
    event = json.loads(lines[4])
    event["event"]["outcome"] = "denied"
    lines[4] = json.dumps(event)
    path.write_text("\n".join(lines) + "\n")
    report = verify_archive(path, verifiers_for([signer]))
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (4, "altered")


def test_a_broken_chain_is_not_archived(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path
) -> None:
    record_many(audit, clock, 6)
    execute(store, "DELETE FROM audit_events WHERE seq = 2")
    with pytest.raises(AuditIntegrityError, match="position 2"):
        archive_segment(store, tmp_path / "x.jsonl", up_to_seq=5, signer=signer, clock=clock,
                        verifiers=verifiers_for([signer]))
    assert not (tmp_path / "x.jsonl").exists()


def test_archiving_past_the_head_is_refused(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path
) -> None:
    audit.record(agent_event(clock))
    with pytest.raises(AuditError, match="no event at position 9"):
        archive_segment(store, tmp_path / "x.jsonl", up_to_seq=9, signer=signer, clock=clock,
                        verifiers=verifiers_for([signer]))


@pytest.mark.parametrize(("change", "says"), [
    (lambda line: {**line, "seq": str(line["seq"])}, "`seq` that is not a whole number"),
    (lambda line: {**line, "seq": float(line["seq"])}, "`seq` that is not a whole number"),
    (lambda line: {**line, "hash": 5}, "`hash` that is not a string"),
    (lambda line: {**line, "event": "x"}, "`event` that is not an object"),
    (lambda line: [line], "is not an event"),
])
def test_a_segment_line_is_read_to_its_shape(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path,
    change: Callable[[dict[str, Any]], object], says: str,
) -> None:
    # a position given as "5" or 5.0 was converted and checked as 5
    path = _archived(audit, store, clock, signer, tmp_path)
    lines = path.read_text().splitlines()
    lines[4] = json.dumps(change(json.loads(lines[4])))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match=f"line 5 of audit segment .*{re.escape(says)}"):
        verify_archive(path, verifiers_for([signer]))


def test_a_segment_with_its_event_lines_deleted_is_truncated(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path
) -> None:
    path = _archived(audit, store, clock, signer, tmp_path)
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n")  # the header alone
    report = verify_archive(path, verifiers_for([signer]))
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (1, "truncated")


def test_kept_checkpoints_across_a_cut_by_retention(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner, tmp_path: Path
) -> None:
    record_many(audit, clock, 35)
    keys = verifiers_for([signer])
    by_seq = {c.seq: c for c in load_checkpoints(store)}
    before, after = by_seq[10], by_seq[30]
    path = tmp_path / "one.jsonl"
    archive_segment(store, path, up_to_seq=20, signer=signer, clock=clock, verifiers=keys)
    assert verify_store(store, keys, [after]).is_valid  # after the cut: held
    report = verify_store(store, keys, [before, after])
    assert report.problem is not None  # before the cut: never taken as held
    assert (report.problem.seq, report.problem.kind) == (10, "checkpoint_unverifiable")
    assert verify_archive(path, keys, [before]).is_valid  # the segment holds it
    outside = verify_archive(path, keys, [before, after])
    assert outside.problem is not None
    assert (outside.problem.seq, outside.problem.kind) == (30, "checkpoint_unverifiable")
