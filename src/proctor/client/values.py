"""The client's values: a task, a grant, a verdict. Plain frozen data, read from the API's
answers; a grant's token is kept out of its ``repr``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApprovalRef", "Grant", "Task", "Verdict"]


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    agent: str
    purpose: str
    expires_at: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Task:
        return cls(id=str(body["id"]), agent=str(body["agent"]),
                   purpose=str(body.get("purpose", "")), expires_at=str(body.get("expires_at")))


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant bound to the agent's key: useless without it, and shown to nobody."""

    id: str
    accessor: str
    task: str
    agent: str
    expires_at: str
    scope: Mapping[str, Any]
    token: str = field(repr=False)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Grant:
        return cls(id=str(body["grant_id"]), accessor=str(body["accessor"]),
                   task=str(body["task"]),
                   agent=str(body["agent"]), expires_at=str(body["expires_at"]),
                   scope=dict(body.get("scope") or {}), token=str(body["token"]))


@dataclass(frozen=True, slots=True)
class ApprovalRef:
    id: str
    status: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """proctor's answer for one call (``POST /v1/decide``)."""

    tool: str
    decision: str  # allow | deny | approval_required
    code: str
    reasons: tuple[str, ...]
    policy_ids: tuple[str, ...] = ()
    revision: int | None = None
    event_id: str | None = None
    approval: ApprovalRef | None = None

    @property
    def is_allowed(self) -> bool:
        return self.decision == "allow"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or self.code

    @classmethod
    def of(cls, tool: str, body: Mapping[str, Any]) -> Verdict:
        approval = body.get("approval")
        return cls(
            tool=tool, decision=str(body["decision"]), code=str(body["code"]),
            reasons=tuple(str(r) for r in body.get("reasons") or ()),
            policy_ids=tuple(str(p) for p in body.get("policy_ids") or ()),
            revision=body.get("revision"), event_id=body.get("event_id"),
            approval=ApprovalRef(str(approval["id"]), str(approval["status"]),
                                 str(approval["expires_at"])) if approval else None)

    def as_json(self) -> dict[str, Any]:
        """What an adapter puts in a refusal: no arguments, no token."""
        return {"tool": self.tool, "decision": self.decision, "code": self.code,
                "reasons": list(self.reasons), "policy_ids": list(self.policy_ids),
                "event_id": self.event_id,
                "approval": self.approval.id if self.approval else None}
