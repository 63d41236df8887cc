"""An archive signs its cut in the writer's transaction and deletes its events after it,
a chunk per transaction, outside it: decisions are answered meanwhile, the log verifies
between any two chunks, and a deletion that stopped is finished by the next archive."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from proctor.audit import AuditLog, load_checkpoints, verifiers_for, verify_archive, verify_store
from proctor.audit.cuts import load_cuts
from proctor.audit.retention import DELETE_CHUNK, archived_left, delete_archived
from proctor.clock import FrozenClock
from proctor.errors import AuditIntegrityError
from proctor.keys import LocalSigner
from proctor.oversight.milestones import archive_with_event
from proctor.store import Store, open_store
from tests.audit.bulk import append_many
from tests.audit.helpers import agent_event, cut_at_20, execute, record_many


def _first_and_keys(store: Store) -> tuple[int, int, int]:
    """The first event's position, and the keys at or below / above it."""
    with store.reading() as conn:
        first = int(conn.execute(text("SELECT min(seq) FROM audit_events")).scalar_one())
        below, kept = conn.execute(text(
            "SELECT count(*) FILTER (WHERE seq < :first), count(*) FILTER (WHERE seq >= "
            ":first) FROM audit_keys"), {"first": first}).one()
    return first, int(below), int(kept)


def _valid(store: Store, signer: LocalSigner) -> tuple[int | None, tuple[str, ...]]:
    report = verify_store(store, verifiers_for([signer]))
    assert report.is_valid, report.problem
    return report.first_seq, report.notes


def test_a_long_log_is_archived_a_chunk_at_a_time_and_verifies_between_chunks(
    store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    append_many(store, signer, clock, 30_000)
    assert _valid(store, signer) == (1, ())
    keys = verifiers_for([signer])
    chunk = DELETE_CHUNK[store.backend]
    audit = AuditLog(store, signer=signer, clock=clock, checkpoint_every=10_000, timeout=20.0)
    try:
        segment = archive_with_event(
            store, audit, tmp_path / "one.jsonl", up_to_seq=20_000, signer=signer,
            verifiers=keys, event=agent_event(clock, 1), most_chunks=1)
        assert (segment.first, segment.end.seq) == (1, 20_000)
        assert 20_000 in load_cuts(store)
        # one chunk deleted, with its keys; the rest below the cut verify as they are
        first, below, _ = _first_and_keys(store)
        assert (first, below) == (chunk + 1, 0)
        assert archived_left(store) == 20_000 - chunk
        first_seq, notes = _valid(store, signer)
        assert first_seq == chunk + 1
        assert any("not all deleted yet" in note for note in notes)
        # a decision is answered between two chunks, on the same writer
        assert audit.record(agent_event(clock, 2)).seq == 30_002  # after audit.archive
        delete_archived(store, keys, most_chunks=1)
        assert _first_and_keys(store)[0] == 2 * chunk + 1
        assert _valid(store, signer)[0] == 2 * chunk + 1
        # the next archive finishes the deletion first, then archives its own
        second = archive_with_event(
            store, audit, tmp_path / "two.jsonl", up_to_seq=30_000, signer=signer,
            verifiers=keys, event=agent_event(clock, 3))
        assert (second.first, second.end.seq) == (20_001, 30_000)
    finally:
        audit.close()
    first, below, kept = _first_and_keys(store)
    assert (first, below, archived_left(store)) == (30_001, 0, 0)
    assert _valid(store, signer) == (30_001, ())
    assert verify_archive(tmp_path / "one.jsonl", keys).is_valid
    assert verify_archive(tmp_path / "two.jsonl", keys).is_valid
    assert kept <= 4 * 3  # the keys of the three events left, if filled yet


def test_a_deletion_stopped_after_any_chunk_verifies_and_is_finished_by_the_next_archive(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    keys = cut_at_20(audit, store, signer, clock, tmp_path / "one.jsonl")
    assert _valid(store, signer)[0] == 1  # cut, nothing deleted yet
    for expected_first in (4, 7, 10, 13, 16, 19):
        delete_archived(store, keys, chunk=3, most_chunks=1)  # a process stopped here
        assert _first_and_keys(store)[:2] == (expected_first, 0)
        first_seq, notes = _valid(store, signer)
        assert first_seq == expected_first and notes
    archive_with_event(store, audit, tmp_path / "two.jsonl", up_to_seq=26, signer=signer,
                       verifiers=keys, event=agent_event(clock))
    assert _valid(store, signer) == (27, ())
    assert verify_archive(tmp_path / "two.jsonl", keys).first_seq == 21


def test_events_left_below_a_cut_are_still_held_to_it(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    keys = cut_at_20(audit, store, signer, clock, tmp_path / "one.jsonl")
    delete_archived(store, keys, chunk=5, most_chunks=1)
    execute(store, "UPDATE audit_events SET body = replace(body, 'allowed', 'denied') "
                   "WHERE seq = 12")
    report = verify_store(store, keys)
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (12, "altered")
    execute(store, "UPDATE audit_events SET body = replace(body, 'denied', 'allowed') "
                   "WHERE seq = 12")
    execute(store, "DELETE FROM audit_events WHERE seq = 15")  # a gap below the cut
    report = verify_store(store, keys)
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (15, "missing")


def test_nothing_is_deleted_under_a_cut_nobody_signed(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    record_many(audit, clock, 25)
    execute(store, "INSERT INTO audit_cuts (through, hash, kid, payload, signature) "
                   "SELECT 20, hash, 'k', '{}', 'AA' FROM audit_events WHERE seq = 20")
    with pytest.raises(AuditIntegrityError, match=r"invalid signature|unknown key"):
        delete_archived(store, verifiers_for([signer]))
    assert _first_and_keys(store)[0] == 1


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_decisions_are_answered_while_an_archived_row_holds_up_the_deletion(
    database_url: str, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    # The writer waits at most 2 s for a lock in its batch; the deletion, on the store's
    # own connections, up to a minute: it is still waiting when the decision is answered
    writer_store = open_store(database_url, lock_timeout_seconds=60.0)
    audit = AuditLog(writer_store, signer=signer, clock=clock, checkpoint_every=10,
                     timeout=4.0)
    keys = verifiers_for([signer])
    done: list[object] = []
    try:
        record_many(audit, clock, 25)
        with psycopg.connect(database_url) as holder:  # a session holding an old row
            holder.execute("SELECT seq FROM audit_events WHERE seq = 5 FOR UPDATE")

            def archive() -> None:
                try:
                    done.append(archive_with_event(
                        writer_store, audit, tmp_path / "one.jsonl", up_to_seq=20,
                        signer=signer, verifiers=keys, event=agent_event(clock)))
                except Exception as exc:
                    done.append(exc)

            worker = threading.Thread(target=archive)
            worker.start()
            _wait_for_a_lock_wait(database_url, worker)
            # the archive is cut and the deletion waits: a decision is answered now
            recorded = audit.record(agent_event(clock, 7))
            assert not done, done
            assert 20 in load_cuts(writer_store)
            assert recorded.seq == 27  # after the archive's own event
            assert _valid(writer_store, signer)[0] == 1
            holder.rollback()
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert [type(d).__name__ for d in done] == ["Segment"]
        assert _valid(writer_store, signer) == (21, ())
        assert len(load_checkpoints(writer_store)) >= 2
    finally:
        audit.close()
        writer_store.close()


def _wait_for_a_lock_wait(url: str, worker: threading.Thread) -> None:
    """Until a session of this database waits for a row lock (the event), or ``worker``
    ended without one."""
    with psycopg.connect(url, autocommit=True) as watcher:
        while worker.is_alive():
            found = watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone()
            if found is not None:
                return
            watcher.execute("SELECT pg_sleep(0.05)")
    pytest.fail("the archive ended without waiting for the held row")
