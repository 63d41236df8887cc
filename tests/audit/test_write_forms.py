"""The writer's rows are what they were before its per-batch work was made cheaper: the
SQLite time text, the chunks of a multi-row insert, an effect's rows, and every stored
column of events written in batches of every size, held to the forms computed here the
way the writer computed them before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, DecisionRecord, canonical_json
from proctor.audit.chain import GENESIS_HASH, chain_hash
from proctor.audit.driver import _CHUNK_FOR, _CHUNKS, WriteCursor, _sqlite_time
from proctor.audit.events import new_event_id
from proctor.clock import FrozenClock
from proctor.store import Store
from proctor.store.tables import audit_events

WAIT = 30.0


def _old_sqlite_time(value: datetime) -> str:
    """The SQLite time text as the driver wrote it before (kept here as the reference)."""
    if value.utcoffset() == timedelta(0):
        return value.isoformat(sep=" ", timespec="microseconds")[:-6]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _old_chunks(count: int) -> list[int]:
    """The chunk sizes of a multi-row insert of ``count`` rows as chosen before."""
    sizes, start = [], 0
    while start < count:
        size = min(_CHUNKS, key=lambda c: (c > count - start, -c))
        sizes.append(size)
        start += size
    return sizes


def _chunks(count: int) -> list[int]:
    sizes, left = [], count
    while left:
        size = _CHUNK_FOR[left] if left < _CHUNKS[-1] else _CHUNKS[-1]
        sizes.append(size)
        left -= size
    return sizes


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(UTC) | st.builds(
                        timezone, st.integers(-1439, 1439).map(lambda m: timedelta(minutes=m)))))
def test_the_sqlite_time_text_is_the_one_written_before(value: datetime) -> None:
    assert _sqlite_time(value) == _old_sqlite_time(value)


def test_the_sqlite_time_text_keeps_a_whole_second_and_a_small_year() -> None:
    for value in (datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC),
                  datetime(7, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
                  datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))):
        assert _sqlite_time(value) == _old_sqlite_time(value)


def test_a_batch_of_any_size_is_inserted_in_the_chunks_chosen_before() -> None:
    for count in range(1, 1100):
        assert _chunks(count) == _old_chunks(count), count


_ACTORS = [Actor(ActorType.AGENT, "agent-é", "owner-☃"), Actor(ActorType.HUMAN, "ops 👩‍💻"),
           Actor(ActorType.SYSTEM, "proctor")]


def _event(n: int, clock: FrozenClock) -> AuditEvent:
    """Events of every actor type, with unicode, large integers and nested detail."""
    now = clock.now() + timedelta(microseconds=n * 7919)
    if n % 5 == 0:
        now = now.astimezone(timezone(timedelta(hours=5, minutes=30)))
    return AuditEvent(
        id=new_event_id(now), time=now, actor=_ACTORS[n % 3], action=f"tool.call/ünï-{n}",
        target=f"git/git_log ✓ {n}", outcome="allowed" if n % 2 else "denied",
        task=f"task-{n % 4}", delegation_chain=("root", f"child-{n}")[: n % 3],
        decision=None if n % 4 == 0 else DecisionRecord(
            "allow", "ok", (f"p{n}",), n * 10**15, (f"reason {n} — ñ",)),
        request_digest=None if n % 3 else "ab" * 32, grant=f"acc-{n}" if n % 2 else None,
        source="10.0.0.1" if n % 6 == 0 else None, concerns=None,
        detail={"n": n, "big": -(2**70) - n, "nested": {"list": [n, "ü", None, True,
                                                                  {"deep": [2**63]}]},
                "text": "line\nbreak\t\"quoted\"\\"})


class _Rows:
    """Effects that read two rows in the writer's transaction and keep what it was given."""

    def __init__(self) -> None:
        self.found: list[Any] = []

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.found = tx.rows("SELECT 1, 'ü' UNION ALL SELECT 2, NULL ORDER BY 1")
        return None


def test_events_written_in_batches_of_every_size_store_the_columns_they_did(
        audit: AuditLog, store: Store, clock: FrozenClock) -> None:
    events = [_event(n, clock) for n in range(302)]
    receipts = [audit.submit(event) for event in events[:300]]
    effects = _Rows()
    recorded = audit.record_with(events[300], effects, more=[events[301]])
    for receipt in receipts:
        receipt.wait(WAIT)
    assert recorded is not None
    assert effects.found == [(1, "ü"), (2, None)]
    assert all(type(row) is tuple for row in effects.found)

    with store.engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
    assert len(rows) == len(events)
    prev = GENESIS_HASH
    for seq, (row, event) in enumerate(zip(rows, events, strict=True), start=1):
        body = canonical_json(event.as_json())
        assert row.seq == seq
        assert row.body == body.decode("utf-8")
        assert (row.prev_hash, row.hash) == (prev, chain_hash(prev, body))
        assert (row.event_id, row.actor_type, row.actor_id, row.task, row.action,
                row.decision) == (event.id, event.actor.type.value, event.actor.id, event.task,
                                  event.action, event.decision and event.decision.outcome)
        stored = row.time if row.time.tzinfo else row.time.replace(tzinfo=UTC)
        assert stored == event.time
        prev = row.hash
    if store.backend == "sqlite":
        with store.engine.connect() as conn:
            texts = [t for (t,) in conn.exec_driver_sql(
                "SELECT CAST(time AS TEXT) FROM audit_events ORDER BY seq")]
        assert texts == [_old_sqlite_time(event.time) for event in events]
