"""An attribution adds what only the caller knows to its actor's events, and learns which
of them could not be written."""

from __future__ import annotations

import pytest

from proctor.audit import (
    Actor,
    ActorType,
    Attribution,
    AuditEvent,
    AuditLog,
    human_event,
    iter_events,
    new_event_id,
)
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError
from proctor.store import open_store

ERIN = Actor(ActorType.HUMAN, "erin@acme.example")


def _attribution() -> Attribution:
    return Attribution(ERIN, {"os_user": "erin"}, source="cli")


def test_only_the_actors_events_are_attributed_and_their_own_detail_wins(
    clock: FrozenClock,
) -> None:
    who = _attribution()
    mine = who.apply(human_event(ERIN.id, "grant.revoke", "acc_1", "revoked",
                                 now=clock.now(), reason="done"))
    assert (dict(mine.detail), mine.source) == ({"os_user": "erin", "reason": "done"}, "cli")
    claimed = who.apply(human_event(ERIN.id, "grant.revoke", "acc_1", "revoked",
                                    now=clock.now(), detail={"os_user": "its own"}))
    assert claimed.detail == {"os_user": "its own"}
    sourced = who.apply(human_event(ERIN.id, "approval.grant", "x", "approved",
                                    now=clock.now(), source="10.0.0.7"))
    assert sourced.source == "10.0.0.7"
    for other in (Actor(ActorType.HUMAN, "dave@acme.example"),
                  Actor(ActorType.AGENT, ERIN.id), Actor(ActorType.SYSTEM, "proctor")):
        event = AuditEvent(id=new_event_id(clock.now()), time=clock.now(), actor=other,
                           action="grant.revoke", target="acc_1", outcome="revoked")
        assert who.apply(event) is event


def test_the_log_attributes_what_it_writes_and_notes_what_it_could_not(
    database_url: str, clock: FrozenClock,
) -> None:
    who = _attribution()
    store = open_store(database_url)
    try:
        audit = AuditLog(store, clock=clock, attribution=who)
        audit.record(human_event(ERIN.id, "task.end", 'Task::"t"', "revoked", now=clock.now()))
        audit.close()
        with pytest.raises(AuditUnavailableError):
            audit.record(human_event(ERIN.id, "agent.suspend", 'Agent::"a"', "suspended",
                                     now=clock.now()))
        with pytest.raises(AuditUnavailableError):
            audit.record(human_event("dave@acme.example", "agent.suspend", 'Agent::"a"',
                                     "suspended", now=clock.now()))
        written = [stored.event for stored in iter_events(store)]
    finally:
        store.close()
    assert [(e["action"], e["detail"], e["source"]) for e in written] == [
        ("task.end", {"os_user": "erin"}, "cli")]
    assert [e.action for e in who.unrecorded] == ["agent.suspend"]
