"""Agents and humans apart: every query selects by actor type; humans' events link back."""

from __future__ import annotations

from datetime import timedelta

from proctor.audit import (
    ActorType,
    AuditLog,
    EventFilter,
    follow_events,
    human_event,
    iter_events,
    search_events,
    tail_events,
)
from proctor.clock import FrozenClock
from proctor.store import Store
from tests.audit.helpers import agent_event

SUPPORT = "spiffe://acme.example/agent/support"


def fill(audit: AuditLog, clock: FrozenClock) -> dict[str, str]:
    ids = {}
    ids["read"] = audit.record(agent_event(clock, 1)).event_id
    ids["refund"] = audit.record(agent_event(clock, 2, agent=SUPPORT, task="task-7",
                                             outcome="approval_required")).event_id
    ids["approve"] = audit.record(human_event(
        "dave@acme.example", "approval.grant", 'Tool::"crm/issue_refund"', "approved",
        concerns=ids["refund"], task="task-7", now=clock.now())).event_id
    ids["denied"] = audit.record(agent_event(clock, 3, outcome="deny")).event_id
    ids["revoke"] = audit.record(human_event(
        "erin@acme.example", "grant.revoke", 'Grant::"acc-7f3a"', "revoked",
        concerns=ids["read"], now=clock.now())).event_id
    return ids


def ids_of(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.event["id"] for e in events]


def test_queries_keep_agent_and_human_events_apart(
    audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    ids = fill(audit, clock)
    agents = search_events(store, EventFilter(actor_type=ActorType.AGENT), newest_first=False)
    humans = search_events(store, EventFilter(actor_type=ActorType.HUMAN), newest_first=False)
    assert ids_of(agents) == [ids["read"], ids["refund"], ids["denied"]]
    assert ids_of(humans) == [ids["approve"], ids["revoke"]]
    assert {e.event["actor"]["type"] for e in agents} == {"agent"}


def test_a_human_approval_is_its_own_event_linked_to_the_agent_event(
    audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    ids = fill(audit, clock)
    [approval] = search_events(store, EventFilter(actor_type=ActorType.HUMAN,
                                                  action="approval.grant"))
    assert approval.event["concerns"] == ids["refund"]
    assert approval.event["decision"] is None
    [asked] = [e for e in iter_events(store) if e.event["id"] == approval.event["concerns"]]
    assert asked.event["actor"]["type"] == "agent"
    assert asked.event["outcome"] == "pending_approval"


def test_search_selects_by_agent_task_decision_and_time(
    audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    start = clock.now()
    ids = fill(audit, clock)
    assert ids_of(search_events(store, EventFilter(actor_id=SUPPORT))) == [ids["refund"]]
    assert ids_of(search_events(store, EventFilter(task="task-7"), newest_first=False)) == [
        ids["refund"], ids["approve"]]
    assert ids_of(search_events(store, EventFilter(decision="deny"))) == [ids["denied"]]
    # The refund (second 2) and its approval (same second) fall in [1.5 s, 3 s).
    window = EventFilter(since=start + timedelta(seconds=1.5), until=start + timedelta(seconds=3))
    assert ids_of(search_events(store, window)) == [ids["approve"], ids["refund"]]


def test_tail_gives_the_last_events_oldest_first(
    audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    ids = fill(audit, clock)
    assert ids_of(tail_events(store, count=2)) == [ids["denied"], ids["revoke"]]


def test_follow_yields_new_events_until_told_to_stop(
    audit: AuditLog, store: Store, clock: FrozenClock
) -> None:
    audit.record(agent_event(clock, 1))
    polls = []

    def wait() -> bool:  # instead of sleeping: append between polls, stop after two
        polls.append(1)
        if len(polls) == 1:
            audit.record(agent_event(clock, 2))
            audit.record(human_event("dave@acme.example", "approval.deny", "x", "rejected",
                                     now=clock.now()))
        return len(polls) < 2

    seen = list(follow_events(store, EventFilter(actor_type=ActorType.AGENT), after_seq=1,
                              wait=wait))
    assert [e.seq for e in seen] == [2]
