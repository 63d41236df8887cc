"""Evidence from real decisions: the audit events of a window, classified once.

Each query is a predicate on an event's JSON (see ``docs/compliance.md``). One pass
over the window counts every query and keeps its newest examples (id, position and
chain hash), which the evidence bundle later proves against a signed checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from proctor.audit import EventFilter, StoredEvent, iter_events, load_checkpoints
from proctor.store import Store

__all__ = ["QUERIES", "Evidence", "Example", "gather_evidence"]

Event = Mapping[str, Any]

DRIFT_POLICIES = frozenset({"drifted-agent-sensitive-tools", "grants-for-drifted-agents"})
RISK_POLICIES = frozenset({"high-risk-agent", "risky-agent-needs-approval"})
EXAMPLES = 3


def _decision(event: Event) -> Mapping[str, Any]:
    decision = event.get("decision")
    return decision if isinstance(decision, Mapping) else {}


def _is_tool(event: Event) -> bool:
    return str(event.get("action", "")).startswith("tool:")


def _refusal_code(event: Event) -> str:
    detail = event.get("detail")
    return str(detail.get("code", "")) if isinstance(detail, Mapping) else ""


def _policies(event: Event) -> set[str]:
    return set(_decision(event).get("policy_ids") or ())


def _actor_type(event: Event) -> str:
    actor = event.get("actor")
    return str(actor.get("type", "")) if isinstance(actor, Mapping) else ""


QUERIES: dict[str, tuple[str, Callable[[Event], bool]]] = {
    "tool_decisions": ("tool calls decided by policy",
                       lambda e: _is_tool(e) and bool(_decision(e))),
    "policy_denies": ("tool calls policy denied",
                      lambda e: _is_tool(e) and _decision(e).get("outcome") == "deny"),
    "grant_refusals": ("tool calls refused at the grant check (scope, revocation, proof)",
                       lambda e: _is_tool(e) and _refusal_code(e).startswith(
                           ("grant_", "proof_"))),
    "approvals_requested": ("tool calls held for a human's approval",
                            lambda e: _decision(e).get("code") == "approval_required"),
    "human_decisions": ("approvals decided by humans",
                        lambda e: _actor_type(e) == "human"
                        and str(e.get("action", "")).startswith("approval.")),
    "grants_issued": ("grant issuances policy allowed",
                      lambda e: e.get("action") == "grant:issue"
                      and _decision(e).get("outcome") == "allow"),
    "delegated_calls": ("tool calls made under a delegated grant",
                        lambda e: _is_tool(e) and bool(e.get("delegation_chain"))),
    "revocations": ("revocations (by hand, by task end, on a leak)",
                    lambda e: e.get("outcome") == "revoked"
                    and e.get("action") in ("grant.revoke", "task.end", "agent.revoke")),
    "redactions": ("answers redacted by the output guard",
                   lambda e: e.get("action") == "gateway.redact"),
    "leaks": ("leaked grants found and revoked", lambda e: e.get("action") == "gateway.leak"),
    "drift_denies": ("calls refused because the agent's manifest drifted",
                     lambda e: bool(_policies(e) & DRIFT_POLICIES)
                     and _decision(e).get("outcome") != "allow"),
    "risk_denies": ("calls held or denied because of the agent's risk score",
                    lambda e: bool(_policies(e) & RISK_POLICIES)
                    and _decision(e).get("outcome") != "allow"),
    "checkpoints": ("signed checkpoints of the audit chain", lambda e: False),
}


@dataclass(frozen=True, slots=True)
class Example:
    """An event cited as evidence: enough to find it and prove it in the chain."""

    id: str
    seq: int
    hash: str
    time: str
    action: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "hash": self.hash, "time": self.time,
                "action": self.action}


@dataclass(slots=True)
class Evidence:
    """What one query found in the window."""

    query: str
    description: str
    count: int = 0
    examples: list[Example] = field(default_factory=list)

    def note(self, stored: StoredEvent) -> None:
        self.count += 1
        event = stored.event
        self.examples.append(Example(str(event.get("id")), stored.seq, stored.hash,
                                     str(event.get("time")), str(event.get("action"))))
        if len(self.examples) > EXAMPLES:  # keep the newest
            del self.examples[0]

    def as_json(self) -> dict[str, Any]:
        return {"query": self.query, "description": self.description, "count": self.count,
                "examples": [x.as_json() for x in self.examples]}


def gather_evidence(store: Store, since: datetime, until: datetime,
                    names: Iterable[str] = QUERIES) -> dict[str, Evidence]:
    """Every query in ``names`` over the events of ``[since, until)``, in one pass."""
    found = {name: Evidence(name, QUERIES[name][0]) for name in names}
    tests = [(found[name], QUERIES[name][1]) for name in found if name != "checkpoints"]
    for stored in iter_events(store, EventFilter(since=since, until=until)):
        for evidence, matches in tests:
            if matches(stored.event):
                evidence.note(stored)
    if "checkpoints" in found:
        signed = [c for c in load_checkpoints(store) if since <= c.signed_at < until]
        found["checkpoints"].count = len(signed)
    return found
