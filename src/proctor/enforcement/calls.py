"""A call on its way through the enforcer: the values its steps pass along (the call
past the grant's checks, the decision waiting for its write, the grant presented) and
the small pure helpers they share (an unreadable call's reason, a request marked
approved, the verdict's code, the decision's span). Nothing here reads the store or
the engine.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from proctor import telemetry
from proctor.approvals import Approval
from proctor.audit import AuditEvent
from proctor.codes import Code
from proctor.documents import MAX_DEPTH, is_unicode_text
from proctor.enforcement.verdicts import CallVerdict, ToolCall, VerdictCode
from proctor.grants import GrantClaims, GrantUse
from proctor.identity import Agent
from proctor.identity.agent import TrustState
from proctor.policy import Decision, DecisionRequest, Outcome

# the enforcer's one logger, whichever of its modules logs
log = logging.getLogger("proctor.enforcement")

_INACTIVE = (TrustState.SUSPENDED, TrustState.RETIRED)
_LAPSED = ("task_expired", "task_idle")  # refusals after which the write's caller ends the task
_NAMED_MOST = 4096  # (agent, tool) pairs whose request names are kept
# an allow decided on what another process had changed meanwhile: decided once more
_STALE = ("agent_changed", "task_changed", "policy_changed")
# refusals after which no call of the same binding (agent, task, tool, arguments, grant)
# can ever be allowed: the approval it spent stays spent. After any other refusal (a
# replayed proof, a stale allow decided again and denied, a failed write, no use left
# while the call that asked, its use counted, still waits for it) it is given back
_FINAL_FOR_CALL = frozenset({
    "grant_revoked", "grant_expired", "grant_unknown", "grant_wrong_agent",
    "grant_manifest_changed", "agent_unknown", "agent_not_active", "task_unknown",
    "task_ended", "task_expired", "task_idle"})

Fresh = Callable[[], "tuple[Agent, DecisionRequest] | None"]
"""The grant's agent and the call's request again, as committed (None: the agent may
no longer act)."""


_Spent = tuple[Approval, "str | None"]
"""An approval a decision spent, and the pre-approval grant whose use it spent (None:
the approval of this exact call)."""


@dataclass(frozen=True, slots=True)
class _Call:
    """A call past the steps before policy: its grant's claims and use, the agent and
    the request as read, and how to read both again (``fresh``; None: read from the
    store just now)."""

    claims: GrantClaims
    accessor: str
    request: DecisionRequest
    use: GrantUse
    call: ToolCall
    agent: Agent
    fresh: Fresh | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A call decided by policy, its write (``event`` with ``call.use``) not yet done."""

    call: _Call
    decision: Decision
    event: AuditEvent
    approval: Approval | None
    spent: _Spent | None

    def settles_in_memory(self) -> bool:
        """Whether :meth:`Enforcer._written` answers without the store: not when the
        write refused a stale allow (decided once more), found the task lapsed (ended),
        or policy asks for an approval (requested)."""
        refusal = self.call.use.refusal
        if refusal is None:
            return self.decision.outcome is not Outcome.APPROVAL_REQUIRED
        stale = refusal.code in _STALE and self.call.fresh is not None
        return not stale and refusal.code not in _LAPSED


@dataclass(frozen=True, slots=True)
class _Presented:
    """A grant and the proof of possession presented with one call."""

    token: str = field(repr=False)
    proof: str = field(repr=False)


class _Fixed:
    def __init__(self, agents: list[Agent]) -> None:
        self._agents = agents

    def list_agents(self) -> list[Agent]:
        return self._agents


_NOT_UNICODE = ("the call's tool or arguments hold text that is not valid Unicode (a lone "
                "surrogate)")
_TOO_DEEP = (f"the call's arguments nest deeper than {MAX_DEPTH} levels (or contain "
             "themselves)")
_NOT_FINITE = ("the call's arguments hold a number JSON cannot carry (NaN or an infinity)")


def _unreadable(tool_id: object, args: object) -> str | None:
    """Why a call cannot be decided as it is, or None: every string in the tool id and the
    arguments (as JSON gives them, keys included) must encode as UTF-8, what the audit
    event, its digest and the store need, and the arguments may nest at most
    :data:`~proctor.documents.MAX_DEPTH` levels, as every transport's parser already
    holds them (a caller in this process could pass deeper ones, or a dict inside
    itself). A number must be finite: Python's JSON parsers (every transport's) read
    ``NaN`` and ``1e999``, which no JSON can carry on to the upstream, the store or
    an approval's binding. Walked without recursion."""
    if not isinstance(tool_id, str):
        return "the call's tool is not a name"
    if not is_unicode_text(tool_id):
        return _NOT_UNICODE
    stack: list[tuple[object, int]] = [(args, 0)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)  # the exact types first: an ABC's isinstance costs more
        if kind is str or (kind is not dict and isinstance(value, str)):
            if not is_unicode_text(cast(str, value)):
                return _NOT_UNICODE
        elif kind is dict or isinstance(value, Mapping):
            if depth >= MAX_DEPTH:
                return _TOO_DEEP
            for key, item in cast(Mapping[object, object], value).items():
                if isinstance(key, str) and not is_unicode_text(key):
                    return _NOT_UNICODE
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            if depth >= MAX_DEPTH:
                return _TOO_DEEP
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            return _NOT_FINITE
    return None


def _printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode escaped (``\\ud800``), for the refusal's event."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fingerprint(agent: Agent) -> tuple[Any, ...]:
    return (agent.trust_state, agent.risk_score, agent.risk_factors, agent.owner, agent.groups)


def _approved(request: DecisionRequest) -> DecisionRequest:
    return DecisionRequest(request.principal, request.action, request.resource,
                           {**request.context, "approved": True})


def _code(decision: Decision) -> VerdictCode:
    # every reason code but `policy_permit` (an allow's) is a Code: tests/test_codes.py
    return "allow" if decision.outcome is Outcome.ALLOW else cast(Code, decision.code.value)



def _decision_span(call: ToolCall) -> contextlib.AbstractContextManager[Any]:
    tool = str(call.tool_id)[:200]
    return telemetry.span(f"proctor.decision {tool}", attributes={
        "gen_ai.tool.name": tool, "mcp.method.name": call.method[:64]})


def _traced(current: Any, verdict: CallVerdict) -> None:
    """The decision's span says what was decided: names, codes and ids only."""
    claims = verdict.claims
    telemetry.set_attributes(current, {
        "proctor.decision": verdict.outcome.value, "proctor.code": verdict.code,
        "proctor.policy_ids": list(verdict.policy_ids),
        "proctor.policy_revision": verdict.revision,
        "proctor.agent": claims.agent_id if claims else None,
        "proctor.task": claims.task_id if claims else None,
        "proctor.audit_event": verdict.event_id})
