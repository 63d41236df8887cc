from __future__ import annotations

import itertools
import threading

import pytest
from sqlalchemy import select

from proctor.audit import (
    GENESIS_HASH,
    AuditLog,
    canonical_json,
    chain_hash,
    load_checkpoints,
    verifiers_for,
    verify_store,
    write_checkpoint,
)
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError
from proctor.keys import LocalSigner
from proctor.store import Store
from proctor.store.tables import audit_events, audit_head
from tests.audit.helpers import agent_event, outcomes_of, record_many


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8() -> None:
    assert canonical_json({"b": [1, {"d": None, "c": True}], "a": "é"}) == (
        '{"a":"é","b":[1,{"c":true,"d":null}]}'.encode())


def test_each_hash_covers_the_previous_hash_and_the_body() -> None:
    first = chain_hash(GENESIS_HASH, b"{}")
    assert first != chain_hash(GENESIS_HASH, b"{ }")
    assert chain_hash(first, b"{}") != first
    assert len(first) == 64


def test_recorded_events_form_a_chain_that_verifies(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    ids = record_many(audit, clock, 25)
    report = verify_store(store, verifiers_for([signer]))
    assert report.is_valid, report.problem
    assert (report.events, report.first_seq, report.last.seq) == (25, 1, 25)
    with store.transaction() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
        head = conn.execute(select(audit_head)).one()
    assert [r.event_id for r in rows] == ids
    assert rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after.prev_hash == before.hash
        assert after.hash == chain_hash(before.hash, after.body.encode())
    assert (head.seq, head.hash) == (25, rows[-1].hash)


def test_a_checkpoint_is_signed_every_n_events(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    record_many(audit, clock, 25)
    checkpoints = load_checkpoints(store)
    assert [c.seq for c in checkpoints] == [10, 20]
    assert all(c.kid == signer.kid for c in checkpoints)
    report = verify_store(store, verifiers_for([signer]))
    assert (report.checkpoints, report.unsigned_tail) == (2, 5)


def test_writing_a_checkpoint_signs_the_current_head(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    assert write_checkpoint(store, signer, clock) is None  # empty chain
    record_many(audit, clock, 3)
    made = write_checkpoint(store, signer, clock)
    assert made is not None and made.seq == 3
    assert write_checkpoint(store, signer, clock) == made  # idempotent at the same head
    assert verify_store(store, verifiers_for([signer])).unsigned_tail == 0


def test_concurrent_callers_share_batches_and_the_chain_stays_linear(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    events = [agent_event(clock, n) for n in range(400)]
    results: list[int] = []
    lock = threading.Lock()

    def worker(part: list) -> None:  # type: ignore[type-arg]
        for event in part:
            seq = audit.record(event).seq
            with lock:
                results.append(seq)

    threads = [threading.Thread(target=worker, args=(events[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == list(range(1, 401))
    assert verify_store(store, verifiers_for([signer])).is_valid


def test_two_writers_on_one_database_never_fork_the_chain(
    database_url: str, clock: FrozenClock, signer: LocalSigner
) -> None:
    from proctor.store import open_store

    stores = [open_store(database_url), open_store(database_url)]
    logs = [AuditLog(s, signer=signer, clock=clock, checkpoint_every=7) for s in stores]
    try:
        def worker(log: AuditLog, offset: int) -> None:
            for n in range(60):
                log.record(agent_event(clock, offset + n))

        threads = [threading.Thread(target=worker, args=(log, i * 1000))
                   for i, log in enumerate(logs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        report = verify_store(stores[0], verifiers_for([signer]))
        assert report.is_valid, report.problem
        assert report.events == 120
    finally:
        for log in logs:
            log.close()
        for s in stores:
            s.close()


def test_a_closed_log_refuses_new_events(audit: AuditLog, clock: FrozenClock) -> None:
    audit.close()
    with pytest.raises(AuditUnavailableError, match="closed"):
        audit.record(agent_event(clock))


def test_the_asynchronous_mode_returns_a_receipt_that_becomes_durable(
    audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    receipts = [audit.submit(agent_event(clock, n)) for n in range(5)]
    assert [r.wait(20.0).seq for r in receipts] == [1, 2, 3, 4, 5]


def test_an_event_the_database_refuses_fails_alone_not_its_batch(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    first = agent_event(clock, 0)
    audit.record(first)
    events = [agent_event(clock, n) for n in range(1, 9)]
    events.insert(4, first)  # the same event id again: the unique index refuses it
    receipts = [audit.submit(e) for e in events]  # queued together: one batch
    outcomes = outcomes_of(receipts)
    assert outcomes.count(None) == 1 and outcomes[4] is None
    assert sorted(s for s in outcomes if s is not None) == list(range(2, 10))
    assert verify_store(store, verifiers_for([signer])).is_valid
