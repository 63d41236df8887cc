"""The fast event serializer writes exactly the canonical JSON of the event."""

from __future__ import annotations

import itertools
import os
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from proctor.audit import (
    Actor,
    ActorType,
    AuditEvent,
    DecisionRecord,
    canonical_json,
    new_event_id,
)
from proctor.audit.events import format_time

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
maybe = st.none() | texts
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
decisions = st.none() | st.builds(
    DecisionRecord, texts, texts, st.lists(texts, max_size=3).map(tuple),
    st.none() | st.integers(min_value=0, max_value=2**40), st.lists(texts, max_size=3).map(tuple))
events = st.builds(
    AuditEvent,
    id=texts,
    time=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC)),
    actor=st.builds(Actor, st.sampled_from(ActorType), texts, texts),
    action=texts, target=texts, outcome=texts, task=texts,
    delegation_chain=st.lists(texts, max_size=3).map(tuple),
    decision=decisions, request_digest=maybe, grant=maybe, source=maybe, concerns=maybe,
    detail=st.dictionaries(texts, json_values, max_size=3),
)


@given(events)
def test_the_fast_body_equals_the_canonical_json_of_the_event(event: AuditEvent) -> None:
    assert event.canonical_body() == canonical_json(event.as_json())


@given(events)
def test_an_event_survives_a_round_trip_through_its_json(event: AuditEvent) -> None:
    assert AuditEvent.from_json(event.as_json()).canonical_body() == event.canonical_body()


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.just(UTC) | st.builds(
                        timezone, st.integers(-1439, 1439).map(lambda m: timedelta(minutes=m)))))
def test_an_event_time_is_its_utc_iso_form_to_the_microsecond(value: datetime) -> None:
    iso = value.astimezone(UTC).isoformat(timespec="microseconds")
    assert format_time(value) == iso.removesuffix("+00:00") + "Z"


def test_event_ids_stay_unique_when_someone_seeds_the_random_module() -> None:
    now = datetime.fromisoformat("2026-11-30T10:00:00+00:00")
    random.seed(7)
    first = new_event_id(now)
    random.seed(7)
    assert new_event_id(now) != first


def test_a_forked_process_draws_event_ids_of_its_own() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    new_event_id(now)  # the parent's pool of random bits is filled
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next ids, then nothing else
        try:
            os.write(write, " ".join(new_event_id(now) for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split()
    os.waitpid(child, 0)
    ours = [new_event_id(now) for _ in range(3)]
    assert len(theirs) == 3
    assert not set(theirs) & set(ours)


def test_event_ids_are_uuid7_of_the_millisecond_with_74_random_bits() -> None:
    now = datetime(2026, 12, 7, 8, 30, 1, 234567, tzinfo=UTC)
    ids = [uuid.UUID(new_event_id(now)) for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert {(i.version, i.variant) for i in ids} == {(7, uuid.RFC_4122)}
    assert {i.int >> 80 for i in ids} == {int(now.timestamp() * 1000)}
    # every random bit varies: rand_a (12 bits) and rand_b (62 bits, past the variant)
    random_bits = [((i.int >> 64) & 0xFFF) << 62 | (i.int & ((1 << 62) - 1)) for i in ids]
    varied = 0
    for a, b in itertools.pairwise(random_bits):
        varied |= a ^ b
    assert varied == (1 << 74) - 1
