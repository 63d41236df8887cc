"""``POST /v1/decide``: one tool call decided for an enforcement point that is not
proctor's gateway (an API gateway, a framework plug-in, an agent SDK).

The body carries the agent's grant, its proof of possession for this call
(``htm`` = ``method``, ``htu`` = ``target``) and the call. The answer is the
decision with its reasons, from :meth:`Enforcer.decide_call`: the same path
the gateway takes (grant, agent, Cedar, approval, audit), fail-closed. A deny
is an answer (200), not an error. The caller must be the grant's agent (or an
admin); anything else is refused (403, audited).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from proctor import telemetry
from proctor.enforcement import ToolCall
from proctor.server.deps import Credentials, authenticate, request_url
from proctor.server.problems import problem_responses
from proctor.server.routes.grants import grant_resource, unverified_holder

__all__ = ["router"]

router = APIRouter(tags=["decisions"])


class CallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: Annotated[str, Field(min_length=1, max_length=512, description="`server/tool`")]
    args: dict[str, Any] = Field(default_factory=dict)


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, Field(min_length=1, max_length=8192, description="The grant")]
    proof: Annotated[str, Field(min_length=1, max_length=4096, description=(
        "The agent's proof for this call: htm = `method`, htu = `target`, ath = the "
        "grant's hash"))]
    call: CallIn
    method: Annotated[str, Field(min_length=1, max_length=64)] = "tools/call"
    target: Annotated[str, Field(max_length=2048, description=(
        "The URL the agent addressed (the enforcement point's); default: this endpoint's "
        "URL"))] | None = None


class GrantRef(BaseModel):
    id: str
    accessor: str | None
    task: str
    agent: str


class ApprovalRef(BaseModel):
    id: str
    status: str
    expires_at: str


class Verdict(BaseModel):
    decision: Literal["allow", "deny", "approval_required"]
    code: str
    reasons: list[str]
    policy_ids: list[str]
    revision: int | None
    event_id: str | None
    grant: GrantRef | None = None
    approval: ApprovalRef | None = None


@router.post("/v1/decide", response_model=Verdict, dependencies=Credentials,
             responses=problem_responses())
async def decide(body: DecideIn, request: Request) -> JSONResponse:
    """Decide one tool call: allow, deny or approval_required, with the reasons, the
    determining policies and the audit event's id."""
    # The hot path: authentication, the control-plane check and the decision share one
    # worker thread, and the answer is serialised once.
    if not telemetry.is_enabled():
        return JSONResponse(await anyio.to_thread.run_sync(_decide, request, body))
    # the caller's trace (its `traceparent` header) is the decision's parent
    with telemetry.span("POST /v1/decide", kind="server", carrier=request.headers,
                        attributes={"http.request.method": "POST",
                                    "http.route": "/v1/decide"}):
        answer = await anyio.to_thread.run_sync(_decide, request, body)
    return JSONResponse(answer)


def _decide(request: Request, body: DecideIn) -> dict[str, Any]:
    # the decision confirms the agent in its own write: its authentication need not
    call = authenticate(request, confirmed_later=True)
    call.require("api:decide", grant_resource(unverified_holder(body.token)))
    state = call.state
    started = call.runtime.clock.monotonic()
    verdict = call.runtime.enforcer.decide_call(body.token, body.proof, ToolCall(
        tool_id=body.call.tool, args=body.call.args, method=body.method,
        target=body.target if body.target is not None else request_url(request, state),
        source_ip=call.source))
    state.metrics.decision_seconds.observe(call.runtime.clock.monotonic() - started)
    state.metrics.decisions.labels(verdict.outcome.value, verdict.code).inc()
    return verdict.as_json()
