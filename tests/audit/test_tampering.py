"""Every kind of tampering with the stored chain is found, with its position."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from proctor.audit import (
    AuditLog,
    ChainHead,
    Checkpoint,
    chain_hash,
    load_checkpoints,
    sign_checkpoint,
    verifiers_for,
    verify_store,
)
from proctor.audit.checkpoints import link_of
from proctor.clock import FrozenClock
from proctor.errors import AuditError
from proctor.keys import LocalSigner
from proctor.store import Store
from tests.audit.helpers import body_of, execute, record_many, resign


@pytest.fixture
def chain(audit: AuditLog, store: Store, clock: FrozenClock) -> Store:
    record_many(audit, clock, 30)  # checkpoints at 10, 20, 30
    audit.close()
    return store


def problem(store: Store, signer: LocalSigner) -> tuple[int, str]:
    report = verify_store(store, verifiers_for([signer]))
    assert report.problem is not None, "tampering went unnoticed"
    return report.problem.seq, report.problem.kind


def test_an_intact_chain_verifies(chain: Store, signer: LocalSigner) -> None:
    assert verify_store(chain, verifiers_for([signer])).is_valid


def test_an_edited_event_is_found_at_its_position(chain: Store, signer: LocalSigner) -> None:
    body = body_of(chain, 14).replace('"outcome":"allowed"', '"outcome":"denied"')
    execute(chain, "UPDATE audit_events SET body = :b WHERE seq = 14", b=body)
    assert problem(chain, signer) == (14, "altered")


def test_an_edited_query_column_is_found(chain: Store, signer: LocalSigner) -> None:
    execute(chain, "UPDATE audit_events SET actor_type = 'human' WHERE seq = 9")
    assert problem(chain, signer) == (9, "index_mismatch")


def test_an_edited_decision_column_is_found(chain: Store, signer: LocalSigner) -> None:
    execute(chain, "UPDATE audit_events SET decision = 'deny' WHERE seq = 3")
    assert problem(chain, signer) == (3, "index_mismatch")


def test_a_deleted_event_is_found(chain: Store, signer: LocalSigner) -> None:
    execute(chain, "DELETE FROM audit_events WHERE seq = 17")
    assert problem(chain, signer) == (17, "missing")


def test_deleted_last_events_are_found(chain: Store, signer: LocalSigner) -> None:
    execute(chain, "DELETE FROM audit_events WHERE seq > 27")
    assert problem(chain, signer) == (28, "truncated")


def test_a_deleted_tail_with_a_rewound_head_is_caught_by_the_checkpoint(
    chain: Store, signer: LocalSigner
) -> None:
    with chain.engine.begin() as conn:
        last = conn.execute(text("SELECT hash FROM audit_events WHERE seq = 25")).scalar_one()
        conn.execute(text("DELETE FROM audit_events WHERE seq > 25"))
        conn.execute(text("UPDATE audit_head SET seq = 25, hash = :h"), {"h": last})
    assert problem(chain, signer) == (26, "truncated")


def test_reordered_events_are_found(chain: Store, signer: LocalSigner) -> None:
    execute(chain, "UPDATE audit_events SET seq = -5 WHERE seq = 5")
    execute(chain, "UPDATE audit_events SET seq = 5 WHERE seq = 6")
    execute(chain, "UPDATE audit_events SET seq = 6 WHERE seq = -5")
    assert problem(chain, signer) == (5, "broken_link")


def test_an_inserted_event_is_found(chain: Store, signer: LocalSigner) -> None:
    # Shift the tail up by one and slip a self-consistent forged event in at 12.
    execute(chain, "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 12")
    execute(chain, "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1012")
    forged = json.loads(body_of(chain, 13))
    forged["id"] = "00000000-0000-7000-8000-000000000000"
    body = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with chain.engine.begin() as conn:
        prev = conn.execute(text("SELECT hash FROM audit_events WHERE seq = 11")).scalar_one()
        conn.execute(text(
            "INSERT INTO audit_events (seq, event_id, time, actor_type, actor_id, task, action, "
            "decision, body, prev_hash, hash) SELECT 12, :id, time, actor_type, actor_id, task, "
            "action, decision, :body, :prev, :hash FROM audit_events WHERE seq = 13"),
            {"id": forged["id"], "body": body, "prev": prev,
             "hash": chain_hash(prev, body.encode())})
    assert problem(chain, signer) == (13, "broken_link")


def test_a_rewritten_tail_with_recomputed_hashes_is_caught_by_a_checkpoint(
    chain: Store, signer: LocalSigner
) -> None:
    # The attacker edits event 15 and re-hashes everything after it, head included.
    with chain.engine.begin() as conn:
        rows = conn.execute(text(
            "SELECT seq, body, prev_hash FROM audit_events WHERE seq >= 15 ORDER BY seq")).all()
        prev = rows[0].prev_hash
        for row in rows:
            body = row.body.replace('"outcome":"allowed"', '"outcome":"denied"')
            digest = chain_hash(prev, body.encode())
            conn.execute(text("UPDATE audit_events SET body = :b, prev_hash = :p, hash = :h "
                              "WHERE seq = :s"), {"b": body, "p": prev, "h": digest, "s": row.seq})
            prev = digest
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})
    # The links are consistent again; only the signed checkpoint at 20 tells.
    assert problem(chain, signer) == (20, "checkpoint_mismatch")


def test_a_forged_checkpoint_signature_is_found(chain: Store, signer: LocalSigner) -> None:
    execute(chain, "UPDATE audit_checkpoints SET signature = 'AAAA' WHERE seq = 20")
    assert problem(chain, signer) == (20, "checkpoint_invalid")


def test_a_checkpoint_by_an_unknown_key_is_not_trusted(chain: Store) -> None:
    stranger = LocalSigner.generate()
    report = verify_store(chain, verifiers_for([stranger]))
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (10, "checkpoint_unknown_key")
    assert "unknown key" in report.problem.message


def test_a_deleted_head_row_is_found_and_stops_appends(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    from proctor.errors import AuditUnavailableError
    from tests.audit.helpers import agent_event

    execute(chain, "DELETE FROM audit_head")
    assert problem(chain, signer) == (31, "truncated")
    with AuditLog(chain, clock=clock, timeout=20.0) as audit, pytest.raises(
            AuditUnavailableError, match="head row is missing"):
        audit.record(agent_event(clock))


def test_an_emptied_log_starts_again_at_genesis(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    from tests.audit.helpers import agent_event

    execute(chain, "DELETE FROM audit_events")
    execute(chain, "DELETE FROM audit_checkpoints")
    execute(chain, "DELETE FROM audit_head")
    with AuditLog(chain, clock=clock, timeout=20.0) as audit:
        assert audit.record(agent_event(clock)).seq == 1
    assert verify_store(chain, verifiers_for([signer])).is_valid


def _kept(store: Store, seq: int) -> Checkpoint:
    """The store's checkpoint at ``seq``, as a copy kept out of band holds it."""
    [checkpoint] = [c for c in load_checkpoints(store) if c.seq == seq]
    return Checkpoint.from_json(json.loads(json.dumps(checkpoint.as_json())))


def kept_problem(store: Store, signer: LocalSigner, kept: list[Checkpoint]
                 ) -> tuple[int, str]:
    report = verify_store(store, verifiers_for([signer]), kept)
    assert report.problem is not None, "tampering went unnoticed"
    return report.problem.seq, report.problem.kind


def test_a_tail_deleted_with_its_checkpoints_is_caught_by_a_checkpoint_kept_out_of_band(
    chain: Store, signer: LocalSigner
) -> None:
    kept = [_kept(chain, 30)]
    with chain.engine.begin() as conn:
        last = conn.execute(text("SELECT hash FROM audit_events WHERE seq = 20")).scalar_one()
        conn.execute(text("DELETE FROM audit_events WHERE seq > 20"))
        conn.execute(text("DELETE FROM audit_keys WHERE seq > 20"))
        conn.execute(text("DELETE FROM audit_checkpoints WHERE seq > 20"))
        conn.execute(text("UPDATE audit_head SET seq = 20, hash = :h, "
                          "keyed = CASE WHEN keyed > 20 THEN 20 ELSE keyed END"), {"h": last})
    assert verify_store(chain, verifiers_for([signer])).is_valid  # the store alone cannot
    assert kept_problem(chain, signer, kept) == (21, "truncated")


def test_an_emptied_log_is_caught_by_a_checkpoint_kept_out_of_band(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    from tests.audit.helpers import agent_event

    kept = [_kept(chain, 10)]
    for table in ("audit_events", "audit_keys", "audit_checkpoints", "audit_head"):
        execute(chain, f"DELETE FROM {table}")  # noqa: S608
    assert kept_problem(chain, signer, kept) == (1, "truncated")
    with AuditLog(chain, clock=clock, timeout=20.0) as audit:  # a new log, from genesis
        audit.record(agent_event(clock))
    assert kept_problem(chain, signer, kept) == (2, "truncated")


def test_a_chain_rewritten_and_signed_again_is_caught_by_a_checkpoint_kept_out_of_band(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    # whoever holds the key (the master key and the database) re-signs the checkpoints
    kept = [_kept(chain, 20)]
    test_a_rewritten_tail_with_recomputed_hashes_is_caught_by_a_checkpoint(chain, signer)
    resign(chain, signer, clock)  # as one chain of checkpoints
    assert verify_store(chain, verifiers_for([signer])).is_valid  # the store alone cannot
    assert kept_problem(chain, signer, kept) == (20, "checkpoint_mismatch")


def test_a_kept_checkpoint_whose_signature_does_not_hold_is_found(
    chain: Store, signer: LocalSigner
) -> None:
    forged = _kept(chain, 20)
    forged = Checkpoint(25, forged.hash, forged.kid, forged.signed_at, forged.payload,
                        forged.signature)
    assert kept_problem(chain, signer, [forged]) == (25, "checkpoint_invalid")


def test_a_checkpoints_signing_time_edited_in_its_row_is_found(
    chain: Store, signer: LocalSigner
) -> None:
    execute(chain, "UPDATE audit_checkpoints SET signed_at = :t WHERE seq = 20",
            t=datetime(2020, 1, 1, tzinfo=UTC))
    assert problem(chain, signer) == (20, "checkpoint_invalid")


@pytest.mark.parametrize(("data", "says"), [
    ([], "is not a JSON object"),
    ({"seq": 1}, "lacks `hash`"),
    ({"seq": True, "hash": "0" * 64, "kid": "k", "signed_at": "2026-01-01T00:00:00Z",
      "payload": "{}", "signature": "x"}, "`seq` that is not a whole number"),
    ({"seq": "3", "hash": "0" * 64, "kid": "k", "signed_at": "2026-01-01T00:00:00Z",
      "payload": "{}", "signature": "x"}, "`seq` that is not a whole number"),
    ({"seq": 3, "hash": "0" * 63, "kid": "k", "signed_at": "2026-01-01T00:00:00Z",
      "payload": "{}", "signature": "x"}, "`hash` that is not 64"),
    ({"seq": 3, "hash": "0" * 64, "kid": 7, "signed_at": "2026-01-01T00:00:00Z",
      "payload": "{}", "signature": "x"}, "`kid` that is not a string"),
    ({"seq": 3, "hash": "0" * 64, "kid": "k", "signed_at": "2026-01-01T00:00:00",
      "payload": "{}", "signature": "x"}, "`signed_at` that is not an ISO 8601 time"),
    ({"seq": 3, "hash": "0" * 64, "kid": "k", "signed_at": "2026-01-01T00:00:00Z",
      "payload": "{}", "signature": "x", "sig": "y"}, "unknown key `sig`"),
])
def test_a_checkpoint_is_read_to_its_shape(data: object, says: str) -> None:
    with pytest.raises(AuditError, match=says):
        Checkpoint.from_json(data)


def test_a_kept_checkpoint_before_a_forged_anchor_is_not_taken_as_held(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    # with the master key and the database: the events up to 15 deleted (past the kept
    # checkpoint at 10), a new anchor signed at 15, the checkpoints before it dropped
    kept = [_kept(chain, 10)]
    with chain.engine.begin() as conn:
        anchor = sign_checkpoint(signer, ChainHead(15, conn.execute(text(
            "SELECT hash FROM audit_events WHERE seq = 15")).scalar_one()), clock.now(),
            log_id=link_of(kept[0]).log)  # the log's own id, kept
        conn.execute(text("DELETE FROM audit_events WHERE seq <= 15"))
        conn.execute(text("DELETE FROM audit_keys WHERE seq <= 15"))
        conn.execute(text("DELETE FROM audit_checkpoints WHERE seq <= 15"))
        conn.execute(text("INSERT INTO audit_checkpoints (seq, hash, kid, signed_at, payload, "
                          "signature) VALUES (15, :h, :k, :t, :p, :s)"),
                     {"h": anchor.hash, "k": anchor.kid, "t": anchor.signed_at,
                      "p": anchor.payload, "s": anchor.signature})
    resign(chain, signer, clock, cut_through=15)  # the checkpoints' chain and a cut
    assert verify_store(chain, verifiers_for([signer])).is_valid  # the store alone cannot
    assert kept_problem(chain, signer, kept) == (10, "checkpoint_unverifiable")
    # a kept checkpoint the remaining chain holds still verifies
    assert verify_store(chain, verifiers_for([signer]), [_kept(chain, 20)]).is_valid


def test_a_kept_checkpoint_does_not_hide_a_tampered_stored_one(
    chain: Store, signer: LocalSigner
) -> None:
    kept = [_kept(chain, 20)]
    execute(chain, "UPDATE audit_checkpoints SET signature = 'AAAA' WHERE seq = 20")
    assert kept_problem(chain, signer, kept) == (20, "checkpoint_invalid")
    execute(chain, "UPDATE audit_checkpoints SET signature = :s, signed_at = :t "
            "WHERE seq = 20", s=kept[0].signature, t=datetime(2020, 1, 1, tzinfo=UTC))
    assert kept_problem(chain, signer, kept) == (20, "checkpoint_invalid")
