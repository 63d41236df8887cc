"""``POST /v1/decide``: one tool call decided for an enforcement point that is not
proctor's gateway (an API gateway, a framework plug-in, an agent SDK).

The body carries the agent's grant, its proof of possession for this call
(``htm`` = ``method``, one of a call's methods, :data:`~proctor.enforcement.CALL_METHODS`;
``htu`` = ``target``, this endpoint's own URL or one at or under an enforcement point the
deployment configured: :func:`~proctor.server.routes.grants.call_target`, else ``422
proof_target_unknown``) and the call. The answer is the
decision with its reasons, from :meth:`Enforcer.decide_call`: the same path
the gateway takes (grant, agent, Cedar, approval, audit), fail-closed. A deny
is an answer (200), not an error, except a deny because something failed: the
policy engine (``engine_error``: 500, the same call fails again) or the store or
the audit log (``store_unavailable``, ``audit_unavailable``: 503 with
``Retry-After``, it passes); a problem that carries the decision's fields.
The caller must be the grant's agent (or an admin); anything else is refused
(403, audited).

The route is a FastAPI route (its OpenAPI operation is generated from ``DecideIn``,
``Verdict`` and the security schemes as for any other) whose handler is lean
(:class:`LeanDecideRoute`): a JSON body that ``DecideIn`` accepts is validated once from
its bytes and decided without FastAPI's dependency solving or response model; any other
request (another media type, an empty body, a body ``DecideIn`` refuses) goes to
FastAPI's own handler of the same endpoint, so a bad input's problem is FastAPI's, as
on every other route. In front of FastAPI's router, :class:`DirectDecide` hands such a
request to the lean handler without routing it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor import telemetry
from proctor.codes import Code, http_status, known
from proctor.enforcement import CallMethod, ToolCall
from proctor.errors import ProctorError
from proctor.server.bodies import NO_NUL, StrictBody
from proctor.server.deps import Credentials, authenticate
from proctor.server.problems import problem_response, problem_responses
from proctor.server.routes.grants import call_target, grant_resource, unverified_holder

__all__ = ["DirectDecide", "LeanDecideRoute", "router"]


class CallIn(StrictBody):
    tool: Annotated[str, Field(min_length=1, max_length=512, pattern=NO_NUL,
                               description="`server/tool`")]
    args: dict[str, Any] = Field(default_factory=dict)


class DecideIn(StrictBody):
    token: Annotated[str, Field(min_length=1, max_length=8192, description="The grant")]
    proof: Annotated[str, Field(min_length=1, max_length=4096, description=(
        "The agent's proof for this call: htm = `method`, htu = `target`, ath = the "
        "grant's hash"))]
    call: CallIn
    method: CallMethod = Field(default="tools/call", description=(
        "The kind of call: its proof's htm (a listing's, an answer's or a grant exchange's "
        "proof is never a call's)"))
    target: Annotated[str, Field(max_length=2048, pattern=NO_NUL, description=(
        "The URL the agent addressed: this endpoint's own, or one at or under an "
        "enforcement point of the deployment (server.toml `enforcement_points`); default: "
        "this endpoint's URL"))] | None = None


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


ALLOWED_REMEMBERED = 1024  # (caller, grant) pairs allowed to ask; all forgotten when full

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
                    return await _answer(request, body, raw)
            return await framework(request)

        return handler


router = APIRouter(tags=["decisions"], route_class=LeanDecideRoute)


@router.post("/v1/decide", response_model=Verdict, dependencies=Credentials,
             responses=problem_responses("proof_target_unknown"))
async def decide(body: DecideIn, request: Request) -> Response:
    """Decide one tool call: allow, deny or approval_required, with the reasons, the
    determining policies and the audit event's id."""
    return await _answer(request, body, await request.body())


PATH = "/v1/decide"


class DirectDecide:
    """ASGI middleware, innermost of the app's own: ``POST /v1/decide`` answered by the
    lean handler without FastAPI's exception middleware, router and route wrappers.

    FastAPI's router tries the API's routes one by one (24 matches for this path; with
    the wrappers around it, about 0.1 ms of the event loop's CPU per decision): the one
    request an enforcement point sends for every tool call is recognised by its method
    and path instead. What it answers is what :class:`LeanDecideRoute` answers: a body it cannot
    take (another media type, a body ``DecideIn`` refuses, a client gone before its body
    came) goes on to FastAPI with the body as read; a proctor error is answered by the
    app's own handler of proctor errors (``on_error``), as FastAPI's exception middleware
    would; anything else rises to the server-error handler, as from any route. The metrics
    and body limits around it are the app's, as for every request.
    """

    def __init__(self, app: ASGIApp, *,
                 on_error: Callable[[Request, Exception], Awaitable[Response]]) -> None:
        self.app = app
        self.on_error = on_error
        self.route = next(r for r in router.routes if isinstance(r, LeanDecideRoute))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" \
                or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:  # the body, whole (BodyLimit hands it over in one message)
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body, raw = None, b""
        if message["type"] == "http.request" and _is_json(scope):
            raw = b"".join(m.get("body", b"") for m in messages)
            # a body DecideIn refuses: FastAPI's handler words the problem, as for every route
            with contextlib.suppress(ValidationError):
                body = DecideIn.model_validate_json(raw)
        if body is None:
            await self.app(scope, _replaying(messages, receive), send)
            return
        scope["route"] = self.route  # what FastAPI's router would note (metrics, audit)
        scope["endpoint"] = self.route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            response = await _answer(request, body, raw)
        except ProctorError as exc:
            response = await self.on_error(request, exc)
            exc.__traceback__ = None
        await response(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    """Whether the request's (first) content type is ``application/json``, as
    :class:`LeanDecideRoute` reads it."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type: str = value.decode("latin-1").partition(";")[0].strip().lower()
            return media_type == "application/json"
    return False


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _answer(request: Request, body: DecideIn, raw: bytes) -> Response:
    # The hot path: authentication, the control-plane check and the decision share one
    # worker thread, and the answer is serialised once.
    if not telemetry.is_enabled():
        answer = await anyio.to_thread.run_sync(_decide, request, body, raw)
    else:
        # the caller's trace (its `traceparent` header) is the decision's parent
        with telemetry.span("POST /v1/decide", kind="server", carrier=request.headers,
                            attributes={"http.request.method": "POST",
                                        "http.route": "/v1/decide"}):
            answer = await anyio.to_thread.run_sync(_decide, request, body, raw)
    failed = known(answer["code"]) if answer["decision"] == "deny" else None
    if failed is not None and http_status(failed) >= 500:
        return _failed(failed, answer)
    return Response(_encode(answer).encode(), media_type="application/json")


def _failed(code: Code, answer: dict[str, Any]) -> Response:
    """A deny because something failed, not a policy's deny (200): the code's status
    (:mod:`proctor.codes`), so that the enforcement point fails closed on its status
    alone and operators see a 5xx to alert on. 500 ``engine_error``: the same call
    against the same policies fails again; 503 with ``Retry-After`` for a store or a
    log out of reach, which passes. The decision's fields (``decision`` ``deny``, the
    reasons, the audit event's id) are in the problem."""
    detail = "; ".join(answer["reasons"]) or "the call is denied: its decision failed"
    fields = {k: v for k, v in answer.items() if k not in ("code", "approval")}
    return problem_response(http_status(code), code, detail, instance=PATH, extra=fields)


def _decide(request: Request, body: DecideIn, raw: bytes) -> dict[str, Any]:
    # the decision confirms the agent in its own write: its authentication need not; and
    # the body (``raw``, which an agent's own-key proof is signed over) carries a proof of
    # possession of the agent's key that the write claims: the identity proof is taken
    # once with it, and is not claimed apart (docs/identity.md)
    call = authenticate(request, body=raw, confirmed_later=True, single_use_body=True)
    state = call.state
    # the control-plane policies never change while the server runs: a caller allowed to
    # ask with a grant is allowed again (as ControlPlane's own memory answers), without
    # reading the token's claims and keying the request again (~40 us of CPU)
    allowed = state.decide_allowed
    key = (call.principal, body.token)
    if key in allowed:
        request.state.action = "api:decide"
    else:
        call.require("api:decide", grant_resource(unverified_holder(body.token)))
        if len(allowed) >= ALLOWED_REMEMBERED:
            allowed.clear()
        allowed[key] = None
    target = call_target(request, state, body.target)
    started = call.runtime.clock.monotonic()
    verdict = call.runtime.enforcer.decide_call(body.token, body.proof, ToolCall(
        tool_id=body.call.tool, args=body.call.args, method=body.method, target=target,
        source_ip=call.source))
    state.metrics.decision_seconds.observe(call.runtime.clock.monotonic() - started)
    state.metrics.decisions.labels(verdict.outcome.value, verdict.code).inc()
    return verdict.as_json()
