"""Searches by task, actor, time and actor type through the keys table (``audit_keys`` up
to the head's ``keyed`` mark, the rows after it) return exactly what a search of the
columns returns, wherever the mark is; the writer fills the keys and moves the mark with
them."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from proctor.audit import (
    ActorType,
    AuditEvent,
    AuditLog,
    EventFilter,
    archive_segment,
    human_event,
    iter_events,
    search_events,
    verifiers_for,
    verify_store,
)
from proctor.audit import driver as audit_driver
from proctor.audit.query import time_key
from proctor.clock import FrozenClock
from proctor.keys import LocalSigner
from proctor.store import Store
from proctor.store.tables import audit_events, audit_head, audit_keys
from tests.audit.helpers import agent_event
from tests.conftest import sqlite_only

EVERY = 7  # events past the mark after which a batch fills keys, in these tests
MOST = 11  # the most events one batch fills the keys of
AGENTS = [f"spiffe://acme.example/agent/a{n}" for n in range(3)]
HUMANS = ["dave@acme.example", "erin@acme.example"]
TASKS = [f"task-{n}" for n in range(4)]


@pytest.fixture
def small_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_driver, "KEYS_EVERY", EVERY)
    monkeypatch.setattr(audit_driver, "KEYS_MOST", MOST)


@pytest.fixture
def log(store: Store, signer: LocalSigner, clock: FrozenClock, small_fills: None
        ) -> Iterator[AuditLog]:
    audit = AuditLog(store, signer=signer, clock=clock, checkpoint_every=10, timeout=20.0)
    try:
        yield audit
    finally:
        audit.close()


def write(audit: AuditLog, clock: FrozenClock, count: int, seed: int) -> None:
    """``count`` events of a few agents and humans on a few tasks, 1-9 at once."""
    rng = random.Random(seed)
    written = 0
    while written < count:
        events = []
        for _ in range(min(rng.randint(1, 9), count - written)):
            clock.advance(seconds=rng.choice((0, 0, 0.25, 0.000001)))  # times a tick apart
            if rng.random() < 0.3:
                events.append(human_event(rng.choice(HUMANS), "grant.revoke",
                                          'Grant::"acc-7f3a"', "revoked",
                                          task=rng.choice(TASKS), now=clock.now()))
            else:
                events.append(agent_event(clock, written, agent=rng.choice(AGENTS),
                                          task=rng.choice(TASKS)))
            written += 1
        asyncio.run(together(audit, events))


async def together(audit: AuditLog, events: list[AuditEvent]) -> None:
    """Record ``events`` at once (the writer takes them in one batch or a few)."""
    await asyncio.gather(*(audit.record_async(event) for event in events))


def keys_from_bodies(store: Store, up_to: int) -> set[tuple[str, str, int]]:
    """The keys of the events up to ``up_to``, read from their bodies."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(audit_events.c.seq, audit_events.c.body)
                            .where(audit_events.c.seq <= up_to)).all()
    keys = set()
    for seq, body in rows:
        event = json.loads(body)
        when = datetime.fromisoformat(event["time"])
        keys |= {("t", event["task"], int(seq)), ("a", event["actor"]["id"], int(seq)),
                 ("y", event["actor"]["type"], int(seq)), ("w", time_key(when), int(seq))}
    return keys


def stored_keys(store: Store) -> tuple[set[tuple[str, str, int]], int]:
    with store.engine.connect() as conn:
        keys = {(k, key, int(s)) for k, key, s in conn.execute(select(audit_keys)).all()}
        mark = conn.execute(select(audit_head.c.keyed)).scalar_one()
    return keys, int(mark or 0)


def put_mark(store: Store, mark: int) -> None:
    """The keys table and the mark as a writer that filled up to ``mark`` leaves them."""
    keys = keys_from_bodies(store, mark)
    with store.engine.begin() as conn:
        conn.execute(delete(audit_keys))
        if keys:
            conn.execute(insert(audit_keys), [{"kind": k, "key": key, "seq": s}
                                              for k, key, s in sorted(keys)])
        conn.execute(update(audit_head).values(keyed=mark or None))


def by_columns(store: Store, wheres: list[EventFilter]) -> dict[EventFilter, list[int]]:
    """Every position each filter's search of the columns alone (the old indexed search)
    returns, oldest first: a search's answer for any limit, order or start is a slice."""
    found = {}
    with store.engine.connect() as conn:
        for where in wheres:
            query = where.apply(select(audit_events.c.seq)).order_by(audit_events.c.seq)
            found[where] = [int(seq) for seq in conn.execute(query).scalars()]
    return found


def filters(store: Store) -> list[EventFilter]:
    """Filters by task, actor, actor type and time (windows whose ends are events' own
    times, in UTC and in another zone, and the same shifted by a microsecond)."""
    with store.engine.connect() as conn:
        times = sorted({json.loads(b)["time"] for b in conn.execute(
            select(audit_events.c.body)).scalars()})
    at = [datetime.fromisoformat(times[i * (len(times) - 1) // 4]) for i in range(5)]
    tick = timedelta(microseconds=1)
    zone = timezone(timedelta(hours=-5))
    windows = [EventFilter(since=at[1]), EventFilter(until=at[2]),
               EventFilter(since=at[1], until=at[3]),
               EventFilter(since=at[1] + tick, until=at[3] + tick),
               EventFilter(since=(at[0] - tick).astimezone(zone), until=at[4].astimezone(zone)),
               EventFilter(since=at[2], until=at[2]), EventFilter(since=at[4] + tick),
               EventFilter(since=at[1], until=at[3], actor_type=ActorType.HUMAN),
               EventFilter(since=at[2], actor_type=ActorType.AGENT, decision="allow"),
               EventFilter(until=at[3], actor_id=AGENTS[0]),
               EventFilter(since=at[0], task="task-2")]
    return [EventFilter(task=t) for t in [*TASKS, "task-none"]] + [
        EventFilter(actor_id=a) for a in [*AGENTS, *HUMANS, "nobody"]] + [
        EventFilter(task="task-1", actor_id=AGENTS[0]),
        EventFilter(task="task-2", actor_type=ActorType.HUMAN),
        EventFilter(actor_id=AGENTS[1], decision="allow"),
        EventFilter(actor_id=HUMANS[0], action="grant.revoke"),
        EventFilter(task="task-3", actor_type=ActorType.AGENT, actor_id=AGENTS[2]),
        EventFilter(actor_type=ActorType.AGENT), EventFilter(actor_type=ActorType.HUMAN),
        EventFilter(actor_type=ActorType.SYSTEM),
        EventFilter(actor_type=ActorType.HUMAN, action="grant.revoke"),
    ] + windows


def check_searches(store: Store, count: int,
                   expected: dict[EventFilter, list[int]] | None = None) -> None:
    """Every filter's searches (newest and oldest first, limits 1, 7 and more than all;
    pages of 4 from the start, each page starting after the last one's end, wherever that
    is against the mark; all from half-way) return what the columns do. ``expected``: the
    columns' answers, read once for a log that has not changed since. (All of it oldest
    first from the start is the search without a limit.)"""
    expected = expected if expected is not None else by_columns(store, filters(store))
    for where, every in expected.items():
        for limit in (1, 7, count + 5):
            for newest_first in (True, False):
                found = [e.seq for e in search_events(store, where, limit=limit,
                                                      newest_first=newest_first)]
                ordered = every[::-1] if newest_first else every
                assert found == ordered[:limit], (where, limit, newest_first)
        for after, page in ((0, 4), (count // 2, 1000)):
            found = [e.seq for e in iter_events(store, where, after_seq=after, page=page)]
            assert found == [seq for seq in every if seq > after], (where, after, page)


def test_searches_agree_with_the_columns_wherever_the_mark_is(
        log: AuditLog, store: Store, clock: FrozenClock) -> None:
    count = 60
    write(log, clock, count, seed=14)
    expected = by_columns(store, filters(store))
    for mark in (0, 1, 17, 30, 31, count - 1, count):
        put_mark(store, mark)
        check_searches(store, count, expected)


def test_the_writer_fills_the_keys_in_steps_and_moves_the_mark_with_them(
        log: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner) -> None:
    write(log, clock, 50, seed=22)
    keys, mark = stored_keys(store)
    assert 50 - EVERY < mark <= 50  # the tail is never EVERY events or more after a batch
    assert keys == keys_from_bodies(store, mark)
    check_searches(store, 50)
    # a mark left far behind (found by a writer that opens) catches up at most MOST
    # events a batch
    log.close()
    put_mark(store, 3)
    with AuditLog(store, signer=signer, clock=clock, timeout=20.0) as again:
        for expected in (3 + MOST, 3 + 2 * MOST, 3 + 3 * MOST):
            again.record(agent_event(clock))
            keys, mark = stored_keys(store)
            assert mark == expected and keys == keys_from_bodies(store, mark)
        check_searches(store, 53)
        write(again, clock, 20, seed=2)
    keys, mark = stored_keys(store)
    assert 73 - EVERY < mark <= 73 and keys == keys_from_bodies(store, mark)


def test_keys_left_behind_by_deleted_events_neither_stop_the_log_nor_match(
        log: AuditLog, store: Store, clock: FrozenClock) -> None:
    write(log, clock, 5, seed=3)
    with store.engine.begin() as conn:  # keys of events since deleted, at positions to come
        conn.execute(insert(audit_keys), [{"kind": "t", "key": "task-gone", "seq": 6},
                                          {"kind": "a", "key": AGENTS[0], "seq": 7},
                                          {"kind": "t", "key": "task-0", "seq": 8}])
    write(log, clock, 25, seed=4)
    keys, mark = stored_keys(store)
    assert mark > 8 and keys >= keys_from_bodies(store, mark)
    check_searches(store, 30)
    assert search_events(store, EventFilter(task="task-gone")) == []


def test_archiving_deletes_the_keys_with_their_events(
        log: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner,
        tmp_path: Path) -> None:
    write(log, clock, 30, seed=5)
    archive_segment(store, tmp_path / "segment.jsonl", up_to_seq=20, signer=signer,
                    clock=clock, verifiers=verifiers_for([signer]))
    keys, mark = stored_keys(store)
    assert {seq for _, _, seq in keys} == set(range(21, mark + 1))
    check_searches(store, 30)


# verification: the keys table against the events' columns (up to the mark, no others)


def keys_problem(store: Store, signer: LocalSigner) -> tuple[int, str, str] | None:
    report = verify_store(store, verifiers_for([signer]))
    if report.problem is None:
        return None
    return report.problem.seq, report.problem.kind, report.problem.message


@pytest.fixture
def keyed(log: AuditLog, store: Store, clock: FrozenClock) -> int:
    """A log of 50 events or a few more whose keys the writer filled in steps, with
    rows past the mark: the mark."""
    write(log, clock, 50, seed=31)
    while (mark := stored_keys(store)[1]) == head(store):
        log.record(agent_event(clock, task=TASKS[0]))
    log.close()
    assert 40 < mark < head(store)
    return mark


def head(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar_one())


def event_keys(store: Store, seq: int) -> tuple[str, str]:
    with store.engine.connect() as conn:
        task, actor = conn.execute(select(audit_events.c.task, audit_events.c.actor_id)
                                   .where(audit_events.c.seq == seq)).one()
    return task, actor


def test_verify_finds_nothing_wrong_with_keys_the_writer_filled(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    assert keys_problem(store, signer) is None


def test_verify_finds_an_event_whose_task_key_was_deleted(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    task, _ = event_keys(store, 12)
    with store.engine.begin() as conn:
        conn.execute(delete(audit_keys).where(audit_keys.c.kind == "t",
                                              audit_keys.c.seq == 12))
    assert search_events(store, EventFilter(task=task), limit=1000,
                         newest_first=False)[0].seq != 12  # what the deletion hid
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (12, "keys_mismatch")
    assert "lacks the task key of the event at position 12" in message


def test_verify_finds_an_actor_key_changed_to_another_actor(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    _, actor = event_keys(store, 20)
    other = next(a for a in [*AGENTS, *HUMANS] if a != actor)
    with store.engine.begin() as conn:
        conn.execute(update(audit_keys).where(audit_keys.c.kind == "a", audit_keys.c.seq == 20)
                     .values(key=other))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (20, "keys_mismatch") and "actor key" in message


def test_verify_finds_a_key_added_for_an_event_that_does_not_have_it(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(audit_keys).values(kind="t", key="task-elsewhere", seq=7))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (7, "keys_mismatch")
    assert "holds a task key at position 7 that the event there does not have" in message


def test_verify_finds_keys_past_the_mark_and_a_mark_moved_back(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    task, _ = event_keys(store, keyed + 1)
    with store.engine.begin() as conn:
        conn.execute(insert(audit_keys).values(kind="t", key=task, seq=keyed + 1))
    assert keys_problem(store, signer) == (
        keyed + 1, "keys_mismatch",
        f"the keys table holds a task key at position {keyed + 1} past the keys' mark at "
        f"position {keyed}")
    with store.engine.begin() as conn:
        conn.execute(delete(audit_keys).where(audit_keys.c.seq > keyed))
        conn.execute(update(audit_head).values(keyed=keyed - 3))
    seq, kind, _ = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (keyed - 2, "keys_mismatch")


def test_verify_finds_an_event_whose_actor_type_key_was_deleted(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(audit_keys).where(audit_keys.c.kind == "y",
                                              audit_keys.c.seq == 14))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (14, "keys_mismatch")
    assert "lacks the actor type key of the event at position 14" in message


def test_verify_finds_a_time_key_moved_by_a_microsecond(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    with store.engine.connect() as conn:
        when = conn.execute(select(audit_keys.c.key).where(
            audit_keys.c.kind == "w", audit_keys.c.seq == 16)).scalar_one()
    moved = time_key(datetime.fromisoformat(when).replace(tzinfo=UTC)
                     + timedelta(microseconds=1))
    with store.engine.begin() as conn:
        conn.execute(update(audit_keys).where(audit_keys.c.kind == "w", audit_keys.c.seq == 16)
                     .values(key=moved))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (16, "keys_mismatch")
    assert "lacks the time key of the event at position 16" in message
    with store.engine.begin() as conn:  # both: the event's and another
        conn.execute(insert(audit_keys).values(kind="w", key=when, seq=16))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (16, "keys_mismatch")
    assert "holds a time key at position 16 that the event there does not have" in message


def test_verify_finds_a_mark_moved_past_the_head(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    last = head(store)
    with store.engine.begin() as conn:
        conn.execute(update(audit_head).values(keyed=last + 5))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (last + 1, "keys_mismatch")
    assert f"mark at position {last + 5} lies past the head at position {last}" in message


def test_an_edited_task_column_is_the_index_s_finding_not_the_keys(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 9)
                     .values(task="task-forged"))
    assert (keys_problem(store, signer) or ())[:2] == (9, "index_mismatch")


@sqlite_only
def test_verify_finds_a_keys_table_it_cannot_read(
        keyed: int, store: Store, signer: LocalSigner) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_keys"))
    seq, kind, message = keys_problem(store, signer) or (0, "", "")
    assert (seq, kind) == (1, "keys_mismatch")
    assert message.startswith("the keys table cannot be read: database error")
