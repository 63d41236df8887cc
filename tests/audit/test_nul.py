"""A NUL (U+0000) in any text of an event: PostgreSQL's text columns and its jsonb
refuse the character, so an agent that put one in a tool name or an argument could
make its own call unrecordable (and fail the events of its batch). Every event is
recordable on both databases: a NUL is recorded as the six characters ``\\u0000``,
before the event is hashed, so both databases store the same event and verify holds."""

from __future__ import annotations

import json

from proctor.audit import (
    Actor,
    ActorType,
    AuditEvent,
    AuditLog,
    DecisionRecord,
    EventFilter,
    new_event_id,
    search_events,
    verifiers_for,
    verify_store,
)
from proctor.clock import FrozenClock
from proctor.keys import LocalSigner
from proctor.store import Store
from tests.audit.helpers import agent_event, body_of, outcomes_of

NUL = "\x00"
SHOWN = "\\u0000"  # the six characters a NUL is recorded as


def _nul_everywhere(clock: FrozenClock) -> AuditEvent:
    clock.advance(seconds=1)
    now = clock.now()
    return AuditEvent(
        id=new_event_id(now), time=now,
        actor=Actor(ActorType.AGENT, f"spiffe://acme.example/agent/c{NUL}der", f"al{NUL}ce"),
        action=f"tool:git/git{NUL}log", target=f'Tool::"git/{NUL}"', outcome=f"denied{NUL}",
        task=f"task{NUL}42", delegation_chain=(f"spiffe://acme.example/agent/{NUL}",),
        decision=DecisionRecord(f"deny{NUL}", f"no_{NUL}permit", (f"p{NUL}",), 3,
                                (f"because {NUL}",)),
        request_digest=f"ab{NUL}", grant=f"acc-{NUL}", source=f"10.0.0.7{NUL}",
        concerns=f"c{NUL}", detail={f"k{NUL}": [f"v{NUL}", {"n": f"{NUL}{NUL}"}]})


def test_an_event_with_a_nul_in_every_field_is_recorded_and_verifies(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    recorded = audit.record(_nul_everywhere(clock))
    after = audit.record(agent_event(clock, 1))  # the log goes on
    assert after.seq == recorded.seq + 1
    body = body_of(store, recorded.seq)
    assert "\\u0000" not in body.replace("\\\\u0000", "")  # no JSON-escaped NUL left
    event = json.loads(body)
    assert event["actor"]["id"] == f"spiffe://acme.example/agent/c{SHOWN}der"
    assert event["action"] == f"tool:git/git{SHOWN}log"
    assert event["task"] == f"task{SHOWN}42"
    assert event["decision"]["reasons"] == [f"because {SHOWN}"]
    assert event["detail"] == {f"k{SHOWN}": [f"v{SHOWN}", {"n": SHOWN * 2}]}
    assert NUL not in body
    report = verify_store(store, verifiers_for([signer]))
    assert report.is_valid, report.problem
    # found by its actor and task as recorded, with a NUL or its recorded text
    for where in (EventFilter(actor_id=f"spiffe://acme.example/agent/c{NUL}der"),
                  EventFilter(task=f"task{SHOWN}42")):
        found = search_events(store, where)
        assert [e.event["id"] for e in found] == [event["id"]]


def test_a_nul_event_does_not_fail_the_events_of_its_batch(
    audit: AuditLog, store: Store, clock: FrozenClock, signer: LocalSigner
) -> None:
    events = [agent_event(clock, n) for n in range(8)]
    events.insert(3, _nul_everywhere(clock))
    receipts = [audit.submit(e) for e in events]  # queued together: one batch
    outcomes = outcomes_of(receipts)
    assert sorted(s for s in outcomes if s is not None) == list(range(1, 10))
    assert verify_store(store, verifiers_for([signer])).is_valid
