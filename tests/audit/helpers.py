"""Building events and tampering with rows, for the audit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, DecisionRecord, new_event_id
from proctor.audit.writer import Receipt
from proctor.clock import FrozenClock
from proctor.errors import AuditUnavailableError
from proctor.store import Store

CODER = "spiffe://acme.example/agent/coder"
ALICE = "alice@acme.example"


def agent_event(clock: FrozenClock, n: int = 0, *, agent: str = CODER, task: str = "task-42",
                outcome: str = "allow", **extra: Any) -> AuditEvent:
    """A decision event of ``agent`` on a git tool; the clock moves one second."""
    clock.advance(seconds=1)
    now = clock.now()
    return AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.AGENT, agent, ALICE),
        action="tool:git/git_log", target=f'Tool::"git/git_log#{n}"',
        outcome={"allow": "allowed", "deny": "denied"}.get(outcome, "pending_approval"),
        task=task, delegation_chain=("spiffe://acme.example/agent/planner",),
        decision=DecisionRecord(outcome, "policy_permit" if outcome == "allow" else
                                "no_matching_permit", ("coding-read",), 3, ("reads are fine",)),
        request_digest="ab" * 32, grant="acc-7f3a", source="10.0.0.7", **extra,
    )


def outcomes_of(receipts: Sequence[Receipt]) -> list[int | None]:
    """Each receipt's position once written, or None where its write failed."""
    outcomes: list[int | None] = []
    for receipt in receipts:
        try:
            outcomes.append(receipt.wait(20.0).seq)
        except AuditUnavailableError:
            outcomes.append(None)
    return outcomes


def record_many(audit: AuditLog, clock: FrozenClock, count: int) -> list[str]:
    """Record ``count`` agent events; their ids in order."""
    return [audit.record(agent_event(clock, n)).event_id for n in range(count)]


def execute(store: Store, sql: str, **params: Any) -> None:
    """Run one statement as an attacker with database access would."""
    with store.engine.begin() as conn:
        conn.execute(text(sql), params)


def body_of(store: Store, seq: int) -> str:
    with store.engine.begin() as conn:
        return str(conn.execute(text("SELECT body FROM audit_events WHERE seq = :s"),
                                {"s": seq}).scalar_one())
