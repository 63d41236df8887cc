"""What an enforcement point hands the enforcer and gets back: the call it asks to
make (:class:`ToolCall`) and the answer (:class:`CallVerdict`, its :data:`VerdictCode`).
Values only, kept apart from the decision so every enforcement point (the gateway, the
API, the stdio wrapper) can name them without the enforcer's machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from proctor.approvals import Approval
from proctor.codes import Code
from proctor.grants import GrantClaims
from proctor.policy import DecisionRequest, Outcome

# A verdict's code: `allow`, or the code of the deny (or of the pending approval).
VerdictCode = Literal["allow"] | Code

CallMethod = Literal["tools/call", "resources/read", "prompts/get", "completion/complete",
                     "resources/subscribe", "resources/unsubscribe"]
"""What a call's proof may be made for (its ``htm``): the requests an enforcement point
decides. A proof for anything else (proctor's own protocols, ``grant/issue`` and
``grant/exchange``; a listing; an HTTP verb; an answer, ``response``) is never a call's."""
CALL_METHODS: frozenset[str] = frozenset(get_args(CallMethod))

# ``detail.holder`` of the events of calls decided for the process holding the grant's key
HELD_IN_PROCESS = "in_process"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call an agent asks to make. ``method`` and ``target`` are what its proof
    must be signed over (the proof's ``htm`` and ``htu``). ``pinned``: the tool is
    pinned (a gateway's ``pin: strict``), and this is the digest of its definition as
    the caller listed it (what the call is made against); an allow's write confirms it
    is the reviewed digest as committed (``tool_changed``, ``tool_unreviewed``)."""

    tool_id: str
    args: Mapping[str, Any]
    method: str = "tools/call"
    target: str = ""
    source_ip: str | None = None
    pinned: str | None = None


@dataclass(frozen=True, slots=True)
class CallVerdict:
    """The answer for one call. ``code`` is stable for machines: ``allow``, a grant
    check's code (``grant_revoked``, ``proof_replayed``, …), a policy reason code
    (``policy_forbid``, ``no_matching_permit``, ``approval_required``, …),
    ``approval_denied``, ``approval_timeout``, ``audit_unavailable``."""

    outcome: Outcome
    code: VerdictCode
    reasons: tuple[str, ...]
    policy_ids: tuple[str, ...] = ()
    revision: int | None = None
    event_id: str | None = None
    claims: GrantClaims | None = None
    accessor: str | None = None
    approval: Approval | None = None
    request: DecisionRequest | None = None
    held: bool = False  # decided on a grant this process holds (decide_held_call)

    @property
    def is_allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def as_json(self) -> dict[str, Any]:
        """What an enforcement point may tell the agent and log: no token, no arguments."""
        document: dict[str, Any] = {
            "decision": self.outcome.value, "code": self.code, "reasons": list(self.reasons),
            "policy_ids": list(self.policy_ids), "revision": self.revision,
            "event_id": self.event_id,
        }
        if self.claims is not None:
            document["grant"] = {"id": self.claims.grant_id, "accessor": self.accessor,
                                 "task": self.claims.task_id, "agent": self.claims.agent_id}
        if self.approval is not None:
            document["approval"] = {"id": self.approval.id,
                                    "status": self.approval.status.value,
                                    "expires_at": self.approval.expires_at.isoformat()}
        return document
