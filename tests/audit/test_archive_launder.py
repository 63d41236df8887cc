"""An archive never signs a cut over a log that verify rejects: events deleted with SQL
(no cut, `cut_missing`) are not laundered by the operator's next archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.audit import AuditLog, load_checkpoints, verifiers_for, verify_store
from proctor.audit.cuts import load_cuts
from proctor.clock import FrozenClock
from proctor.errors import AuditIntegrityError
from proctor.keys import LocalSigner
from proctor.oversight.milestones import archive_with_event, checkpoint_with_event
from proctor.store import Store
from tests.audit.helpers import agent_event, execute, record_many


def test_an_archive_refuses_a_log_whose_oldest_events_were_deleted_without_a_cut(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path
) -> None:
    record_many(audit, clock, 25)  # checkpoints at 10 and 20
    keys = verifiers_for([signer])
    assert 10 in {c.seq for c in load_checkpoints(store)}
    # an attacker with SQL access and no key deletes the oldest ten, anchored at 10
    execute(store, "DELETE FROM audit_keys WHERE seq <= 10")
    execute(store, "DELETE FROM audit_events WHERE seq <= 10")
    report = verify_store(store, keys)
    assert report.problem is not None and report.problem.kind == "cut_missing"
    checkpoints = load_checkpoints(store)
    out = tmp_path / "one.jsonl"
    with pytest.raises(AuditIntegrityError, match=r"refusing to archive: .*without a signed"):
        archive_with_event(store, audit, out, up_to_seq=20, signer=signer, verifiers=keys,
                           event=agent_event(clock))
    # nothing signed, nothing deleted, no file: verify still names the deletion
    assert load_cuts(store) == {}
    assert load_checkpoints(store) == checkpoints
    assert not out.exists()
    report = verify_store(store, keys)
    assert report.problem is not None and report.problem.kind == "cut_missing"
    assert report.first_seq == 11


def test_a_checkpoint_signed_over_such_a_log_does_not_make_it_verify(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock
) -> None:
    record_many(audit, clock, 25)
    keys = verifiers_for([signer])
    execute(store, "DELETE FROM audit_keys WHERE seq <= 10")
    execute(store, "DELETE FROM audit_events WHERE seq <= 10")
    # the operator's checkpoint (as `proctor audit checkpoint` and the compliance
    # report sign it) vouches for the head, not for a start the log lacks a cut for
    made = checkpoint_with_event(audit, signer, agent_event(clock))
    assert made is not None and made.seq == 25
    report = verify_store(store, keys)
    assert report.problem is not None and report.problem.kind == "cut_missing"
