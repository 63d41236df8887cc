"""An effect that withdraws its decision: no event of it is written, its batch-mates are,
and the chain stays whole (the enforcer's first decision of a call it decides again)."""

from __future__ import annotations

import anyio

from proctor.audit import AuditEvent, AuditLog, WriteCursor, verifiers_for, verify_store
from proctor.audit.writer import WITHDRAWN, RecordedEvent
from proctor.clock import FrozenClock
from proctor.keys import LocalSigner
from proctor.store import Store
from tests.audit.helpers import agent_event


class _Withdrawing:
    def __init__(self) -> None:
        self.applied = 0

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.applied += 1
        return WITHDRAWN


def test_a_withdrawn_decision_writes_no_event_and_the_chain_stays_whole(
        store: Store, clock: FrozenClock, signer: LocalSigner) -> None:
    log = AuditLog(store, signer=signer, clock=clock)
    try:
        kept = log.record(agent_event(clock, 1))
        withdrawn = _Withdrawing()
        assert log.record_with(agent_event(clock, 2), withdrawn) is None
        assert withdrawn.applied == 1
        after = log.record(agent_event(clock, 3))
    finally:
        log.close()
    assert after.seq == kept.seq + 1  # nothing between them
    report = verify_store(store, verifiers_for([signer]))
    assert report.is_valid, report.problem
    assert report.events == 2


def test_a_withdrawn_decision_awaited_on_an_event_loop_is_answered_none(
        store: Store, clock: FrozenClock, signer: LocalSigner) -> None:
    """``record_with_async``: the writer thread answers the loop's future with what
    ``record_with`` returns, None included."""
    log = AuditLog(store, signer=signer, clock=clock)

    async def write() -> tuple[object, object]:
        withdrawn = await log.record_with_async(agent_event(clock, 1), _Withdrawing())
        kept = await log.record_with_async(agent_event(clock, 2), _Keeping())
        return withdrawn, kept
    try:
        withdrawn, kept = anyio.run(write)
    finally:
        log.close()
    assert withdrawn is None
    assert isinstance(kept, RecordedEvent) and kept.seq == 1
    assert verify_store(store, verifiers_for([signer])).events == 1


class _Keeping:
    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        return None


class _Refusing:
    def __init__(self, refusal: AuditEvent) -> None:
        self.refusal = refusal

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        return self.refusal


def test_the_events_written_with_a_decision_stand_only_with_it(
        store: Store, clock: FrozenClock, signer: LocalSigner) -> None:
    """``record_with(..., more=...)``: one batch a receipt, as at ``max_batch`` 1, and
    still one write: the events after the decision's are written with it (kept),
    none of them with a refusal or a withdrawn decision; a checkpoint that falls among
    them is signed."""
    log = AuditLog(store, signer=signer, clock=clock, max_batch=1, checkpoint_every=3)
    try:
        kept = log.record_with(agent_event(clock, 1), _Keeping(),
                               more=[agent_event(clock, 2), agent_event(clock, 3)])
        refused = log.record_with(agent_event(clock, 4), _Refusing(agent_event(clock, 5)),
                                  more=[agent_event(clock, 6)])
        assert log.record_with(agent_event(clock, 7), _Withdrawing(),
                               more=[agent_event(clock, 8)]) is None
        last = log.record(agent_event(clock, 9))
    finally:
        log.close()
    assert kept is not None and refused is not None
    assert (kept.seq, refused.seq, last.seq) == (1, 4, 5)  # 2 and 3 with 1; 4 the refusal
    report = verify_store(store, verifiers_for([signer]))
    assert report.is_valid, report.problem
    assert report.events == 5 and report.checkpoints == 1
