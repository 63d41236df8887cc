"""The values a decision takes and gives: requests, outcomes, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from proctor.human_ids import canonical_human_id

__all__ = ["Decision", "DecisionRequest", "EntityRef", "Outcome", "ReasonCode", "quote_id"]


def quote_id(entity_id: str) -> str:
    """An entity id as a Cedar string literal."""
    return '"' + entity_id.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


class ReasonCode(StrEnum):
    """Why a decision came out as it did; stable, for machines and audit queries."""

    PERMITTED = "policy_permit"
    FORBIDDEN = "policy_forbid"
    NO_PERMIT = "no_matching_permit"
    APPROVAL_REQUIRED = "approval_required"
    NO_POLICIES = "no_active_policies"
    INVALID_REQUEST = "invalid_request"
    ENGINE_ERROR = "engine_error"
    AUDIT_UNAVAILABLE = "audit_unavailable"


@dataclass(frozen=True, slots=True)
class EntityRef:
    """A Cedar entity uid such as ``Agent::"spiffe://acme.example/agent/coder"``.

    A ``Human``'s id is kept in canonical form (:mod:`proctor.human_ids`), as the
    entities and policies name humans.
    """

    type: str
    id: str

    def __post_init__(self) -> None:
        if self.type == "Human":
            object.__setattr__(self, "id", canonical_human_id(self.id))

    def __str__(self) -> str:
        return f"{self.type}::{quote_id(self.id)}"

    def as_json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One question for the decision point: may ``principal`` do ``action`` on ``resource``?

    ``action`` is the action id without its type, e.g. ``tool:git/git_log``.
    ``context`` must match the schema's context for that action; build it with
    :func:`proctor.policy.context.call_context` for tool calls.
    """

    principal: EntityRef
    action: str
    resource: EntityRef
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """An authorization answer. A value, never an exception.

    ``policy_ids`` are the determining policies: the satisfied forbids on a
    deny, the satisfied permits on an allow or an approval. ``reasons`` are
    their human-readable ``@reason`` texts (or a sentence from proctor when no
    policy determined the answer). ``errors`` carry any engine or input error;
    a decision with errors is never an allow.
    """

    outcome: Outcome
    code: ReasonCode
    policy_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    revision: int | None = None

    @property
    def is_allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def as_json(self) -> dict[str, Any]:
        return {
            "decision": self.outcome.value,
            "code": self.code.value,
            "policy_ids": list(self.policy_ids),
            "reasons": list(self.reasons),
            "errors": list(self.errors),
            "revision": self.revision,
        }
