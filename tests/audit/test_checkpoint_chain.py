"""The checkpoints are a chain of their own: what someone with write access to the
database but no signing key can no longer pass off as an intact log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from proctor.audit import (
    AuditLog,
    VerifyReport,
    archive_segment,
    chain_hash,
    load_checkpoints,
    verifiers_for,
    verify_store,
    write_checkpoint,
)
from proctor.audit.chain import canonical_json
from proctor.audit.checkpoints import Checkpoint, digest_of, link_of
from proctor.audit.events import format_time
from proctor.clock import FrozenClock
from proctor.errors import AuditIntegrityError
from proctor.jose import b64url_encode
from proctor.keys import LocalSigner
from proctor.store import Store
from tests.audit.helpers import agent_event, execute, record_many


def _found(store: Store, signer: LocalSigner, checkpoint_every: int = 10_000
           ) -> tuple[int, str]:
    report = verify_store(store, verifiers_for([signer]), checkpoint_every=checkpoint_every)
    assert report.problem is not None, "tampering went unnoticed"
    return report.problem.seq, report.problem.kind


def _rewrite(store: Store, *, from_seq: int, drop_checkpoints: int | None) -> None:
    """As an attacker with SQL only: event ``from_seq`` (an agent's allowed call) made a
    human's deny, every hash after it recomputed, the checkpoints from position
    ``drop_checkpoints`` on deleted, and the head moved."""
    with store.engine.begin() as conn:
        rows = conn.execute(text("SELECT seq, hash, body FROM audit_events ORDER BY seq")).all()
        prev = ""
        for seq, digest, body in rows:
            if seq < from_seq:
                prev = digest
                continue
            event = json.loads(body)
            if seq == from_seq:
                event["actor"] = {**event["actor"], "type": "human", "id": "eve@acme.example"}
                event["outcome"] = "denied"
                event["decision"]["outcome"] = "deny"
            new = canonical_json(event).decode()
            digest = chain_hash(prev, new.encode())
            conn.execute(text("UPDATE audit_events SET prev_hash = :p, hash = :h, body = :b, "
                              "actor_type = :t, actor_id = :a, decision = :d WHERE seq = :s"),
                         {"p": prev, "h": digest, "b": new, "t": event["actor"]["type"],
                          "a": event["actor"]["id"], "d": event["decision"]["outcome"],
                          "s": seq})
            prev = digest
        if drop_checkpoints is not None:
            conn.execute(text("DELETE FROM audit_checkpoints WHERE seq >= :s"),
                         {"s": drop_checkpoints})
        conn.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})


def _ten_more(store: Store, signer: LocalSigner, clock: FrozenClock) -> str:
    """Ten more events by a writer signing every 10: why it signed no checkpoint."""
    with AuditLog(store, signer=signer, clock=clock, checkpoint_every=10) as audit:
        record_many(audit, clock, 10)
        return str(audit.integrity_problem)


@pytest.fixture
def chain(audit: AuditLog, store: Store, clock: FrozenClock) -> Store:
    record_many(audit, clock, 30)  # checkpoints at 10, 20, 30
    audit.close()
    return store


def test_a_past_event_rewritten_under_deleted_checkpoints_is_found(
    chain: Store, signer: LocalSigner
) -> None:
    _rewrite(chain, from_seq=5, drop_checkpoints=1)
    assert _found(chain, signer, checkpoint_every=10) == (10, "checkpoint_missing")


def test_the_writer_signs_nothing_over_a_chain_rewritten_under_deleted_checkpoints(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    _rewrite(chain, from_seq=5, drop_checkpoints=1)
    assert "one was due at position 10" in _ten_more(chain, signer, clock)
    assert load_checkpoints(chain) == []  # nothing signed over the forgery
    assert _found(chain, signer, checkpoint_every=10) == (10, "checkpoint_missing")
    # `proctor audit checkpoint` does not know the writer's spacing (it assumes the
    # default): it signs, and verification still finds the gap before it
    assert write_checkpoint(chain, signer, clock) is not None
    assert _found(chain, signer, checkpoint_every=10) == (10, "checkpoint_missing")


def test_the_writer_signs_nothing_after_a_checkpoint_that_no_longer_matches(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    _rewrite(chain, from_seq=5, drop_checkpoints=None)
    assert _found(chain, signer) == (10, "checkpoint_mismatch")
    assert "no longer has the hash its checkpoint signed" in _ten_more(chain, signer, clock)
    assert [c.seq for c in load_checkpoints(chain)] == [10, 20, 30]


def test_the_writer_signs_nothing_after_checkpoints_deleted_behind_the_last_one_kept(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    _rewrite(chain, from_seq=15, drop_checkpoints=20)
    assert "no checkpoint at position 20" in _ten_more(chain, signer, clock)
    assert [c.seq for c in load_checkpoints(chain)] == [10]
    assert _found(chain, signer, checkpoint_every=10) == (20, "checkpoint_missing")
    with pytest.raises(AuditIntegrityError, match="no checkpoint at position 20"):
        write_checkpoint(chain, signer, clock)  # the last one's spacing says 20 was due


def test_a_checkpoint_deleted_between_two_others_is_found(
    chain: Store, signer: LocalSigner
) -> None:
    execute(chain, "DELETE FROM audit_checkpoints WHERE seq = 20")
    assert _found(chain, signer) == (20, "checkpoint_missing")


def test_checkpoints_name_the_one_before_them_and_one_log(chain: Store) -> None:
    checkpoints = load_checkpoints(chain)
    links = [link_of(c) for c in checkpoints]
    assert [link.prev[0] if link.prev else None for link in links] == [None, 10, 20]
    assert len({link.log for link in links}) == 1 and {link.every for link in links} == {10}


def test_a_batch_across_several_multiples_signs_each(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    receipts = [audit.submit(agent_event(clock, n)) for n in range(35)]
    for receipt in receipts:
        receipt.wait(20.0)
    audit.close()
    assert [c.seq for c in load_checkpoints(store)] == [10, 20, 30]
    assert verify_store(store, verifiers_for([signer]), checkpoint_every=10).is_valid


def test_deleting_the_oldest_events_up_to_a_checkpoint_is_found(
    chain: Store, signer: LocalSigner
) -> None:
    execute(chain, "DELETE FROM audit_events WHERE seq <= 20")
    execute(chain, "DELETE FROM audit_keys WHERE seq <= 20")
    assert _found(chain, signer) == (21, "cut_missing")


def _archived(store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path,
              up_to_seq: int) -> VerifyReport:
    """``proctor audit archive --up-to up_to_seq``, then the store verified."""
    keys = verifiers_for([signer])
    archive_segment(store, tmp_path / "seg.jsonl", up_to_seq=up_to_seq, signer=signer,
                    clock=clock, verifiers=keys)
    return verify_store(store, keys, checkpoint_every=10)


def test_an_archive_verifies_and_its_cut_cannot_be_dropped_or_forged(
    chain: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    report = _archived(chain, signer, clock, tmp_path, 20)
    assert report.is_valid and report.first_seq == 21 and report.notes == ()
    with chain.engine.begin() as conn:
        signature = conn.execute(text("SELECT signature FROM audit_cuts")).scalar_one()
    execute(chain, "UPDATE audit_cuts SET signature = :s", s="A" + signature[1:])
    assert _found(chain, signer) == (21, "cut_invalid")
    execute(chain, "DELETE FROM audit_cuts")
    assert _found(chain, signer) == (21, "cut_missing")


def test_an_archive_cut_is_not_signed_over_a_rewritten_chain(
    chain: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    execute(chain, "DELETE FROM audit_checkpoints WHERE seq = 30")
    with pytest.raises(AuditIntegrityError):
        archive_segment(chain, tmp_path / "seg.jsonl", up_to_seq=20, signer=signer,
                        clock=clock, verifiers=verifiers_for([signer]))
    with chain.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 30


def _old_format(signer: LocalSigner, seq: int, digest: str, clock: FrozenClock) -> Checkpoint:
    """A checkpoint as earlier versions signed it (format 1)."""
    now = clock.now()
    payload = canonical_json({"type": "proctor.audit.checkpoint", "v": 1, "seq": seq,
                              "hash": digest, "kid": signer.kid,
                              "signed_at": format_time(now)})
    return Checkpoint(seq, digest, signer.kid, now, payload.decode(),
                      b64url_encode(signer.sign(payload)))


def test_old_format_checkpoints_still_verify_and_new_ones_chain_after_them(
    store: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    with AuditLog(store, clock=clock) as unsigned:
        record_many(unsigned, clock, 25)
    with store.engine.begin() as conn:
        for seq in (10, 20):
            digest = conn.execute(text("SELECT hash FROM audit_events WHERE seq = :s"),
                                  {"s": seq}).scalar_one()
            old = _old_format(signer, seq, digest, clock)
            conn.execute(text("INSERT INTO audit_checkpoints (seq, hash, kid, signed_at, "
                              "payload, signature) VALUES (:s, :h, :k, :t, :p, :g)"),
                         {"s": seq, "h": digest, "k": signer.kid, "t": old.signed_at,
                          "p": old.payload, "g": old.signature})
    keys = verifiers_for([signer])
    assert verify_store(store, keys, checkpoint_every=10).is_valid
    with AuditLog(store, signer=signer, clock=clock, checkpoint_every=10) as audit:
        record_many(audit, clock, 10)
        assert audit.integrity_problem is None
    checkpoints = load_checkpoints(store)
    assert [(c.seq, link_of(c).version) for c in checkpoints] == [(10, 1), (20, 1), (30, 2)]
    assert link_of(checkpoints[2]).prev == (20, digest_of(checkpoints[1]))
    assert verify_store(store, keys, checkpoint_every=10).is_valid
    # a cut at an old-format checkpoint (archived before cuts were signed) is noted
    execute(store, "DELETE FROM audit_events WHERE seq <= 10")
    execute(store, "DELETE FROM audit_keys WHERE seq <= 10")
    report = verify_store(store, keys, checkpoint_every=10)
    assert report.is_valid and "earlier version" in report.notes[0]


def test_the_writer_goes_on_signing_after_an_archive_of_every_event(
    chain: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    assert _archived(chain, signer, clock, tmp_path, 30).is_valid  # no events, a cut
    # the event at the last checkpoint is archived: the cut through it stands for it
    assert _ten_more(chain, signer, clock) == "None"
    assert [c.seq for c in load_checkpoints(chain)] == [10, 20, 30, 40]
    report = verify_store(chain, verifiers_for([signer]), checkpoint_every=10)
    assert report.is_valid and report.first_seq == 31


def test_a_replaced_log_is_named_by_a_checkpoint_kept_out_of_band(
    chain: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    kept = [c for c in load_checkpoints(chain) if c.seq == 10]
    for table in ("audit_events", "audit_keys", "audit_checkpoints", "audit_head"):
        execute(chain, f"DELETE FROM {table}")  # noqa: S608 (a fixed list)
    with AuditLog(chain, signer=signer, clock=clock, checkpoint_every=10) as audit:
        record_many(audit, clock, 30)  # a new log, from genesis
    keys = verifiers_for([signer])
    assert verify_store(chain, keys, checkpoint_every=10).is_valid  # the store alone cannot
    report = verify_store(chain, keys, kept, checkpoint_every=10)
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (10, "checkpoint_mismatch")
    assert "the log was replaced" in report.problem.message
