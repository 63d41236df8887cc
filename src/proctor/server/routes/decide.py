"""``POST /v1/decide``: one tool call decided for an enforcement point that is not
proctor's gateway (an API gateway, a framework plug-in, an agent SDK).

The body carries the agent's grant, its proof of possession for this call
(``htm`` = ``method``, ``htu`` = ``target``) and the call. The answer is the
decision with its reasons, from :meth:`Enforcer.decide_call`: the same path
the gateway takes (grant, agent, Cedar, approval, audit), fail-closed. A deny
is an answer (200), not an error. The caller must be the grant's agent (or an
admin); anything else is refused (403, audited).

The route is a FastAPI route (its OpenAPI operation is generated from ``DecideIn``,
``Verdict`` and the security schemes as for any other) whose handler is lean
(:class:`LeanDecideRoute`): a JSON body that ``DecideIn`` accepts is validated once from
its bytes and decided without FastAPI's dependency solving or response model; any other
request (another media type, an empty body, a body ``DecideIn`` refuses) goes to
FastAPI's own handler of the same endpoint, so a bad input's problem is FastAPI's, as
on every other route.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from proctor import telemetry
from proctor.enforcement import ToolCall
from proctor.server.deps import Credentials, authenticate, request_url
from proctor.server.problems import problem_responses
from proctor.server.routes.grants import grant_resource, unverified_holder

__all__ = ["LeanDecideRoute", "router"]


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


# JSONResponse's encoding (the same bytes), built once rather than per answer
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                           separators=(",", ":")).encode


class LeanDecideRoute(APIRoute):
    """The decide route with a lean handler in front of FastAPI's.

    A request whose media type is ``application/json`` and whose body ``DecideIn``
    validates (from the bytes, once) is decided at once: no dependency solving (the
    security schemes are declared for the OpenAPI document only; :func:`authenticate`
    reads the headers itself, as before), no second validation, the answer serialised
    once. Anything else is handed to FastAPI's handler of the same endpoint, which
    answers it exactly as before (its 422 problems, its missing-body and media-type
    rules)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        framework = super().get_route_handler()

        async def handler(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if content_type is not None and \
                    content_type.partition(";")[0].strip().lower() == "application/json":
                raw = await request.body()
                try:
                    body = DecideIn.model_validate_json(raw)
                except ValidationError:
                    pass  # FastAPI's handler words the problem, as for every route
                else:
                    return await _answer(request, body)
            return await framework(request)

        return handler


router = APIRouter(tags=["decisions"], route_class=LeanDecideRoute)


@router.post("/v1/decide", response_model=Verdict, dependencies=Credentials,
             responses=problem_responses())
async def decide(body: DecideIn, request: Request) -> Response:
    """Decide one tool call: allow, deny or approval_required, with the reasons, the
    determining policies and the audit event's id."""
    return await _answer(request, body)


async def _answer(request: Request, body: DecideIn) -> Response:
    # The hot path: authentication, the control-plane check and the decision share one
    # worker thread, and the answer is serialised once.
    if not telemetry.is_enabled():
        answer = await anyio.to_thread.run_sync(_decide, request, body)
    else:
        # the caller's trace (its `traceparent` header) is the decision's parent
        with telemetry.span("POST /v1/decide", kind="server", carrier=request.headers,
                            attributes={"http.request.method": "POST",
                                        "http.route": "/v1/decide"}):
            answer = await anyio.to_thread.run_sync(_decide, request, body)
    return Response(_encode(answer).encode(), media_type="application/json")


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
