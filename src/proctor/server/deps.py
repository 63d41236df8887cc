"""Request plumbing shared by the route modules: the server state, the caller, the
control-plane check.

Route modules declare what they need::

    @router.post("/v1/agents/{agent_id:path}/suspend", responses=problem_responses(...))
    def suspend(agent_id: str, call: Call) -> AgentView:
        call.require("api:agent.suspend", entity("Agent", agent.id, ...))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from proctor.audit import AuditEvent, new_event_id, record_change
from proctor.errors import ApiError
from proctor.runtime import Runtime
from proctor.server.principals import Principal
from proctor.server.state import ServerState

__all__ = ["Call", "CallContext", "Credentials", "authenticate", "client_address",
           "request_url", "server_state"]

# Declared for the OpenAPI document; the header is read and checked by
# RequestAuthenticator, which knows every scheme.
bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description=(
    "A human's API token (`ptk_…`) or OIDC token, or an agent's workload proof "
    "(own-key JWS, JWT-SVID, OIDC workload token)"))
dpop = APIKeyHeader(name="DPoP", auto_error=False, scheme_name="dpop", description=(
    "With `Authorization: DPoP <grant>`: a proof of possession of the grant for this "
    "request (htm = method, htu = URL without query)"))


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.proctor
    return state


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def request_url(request: Request, state: ServerState) -> str:
    """This request's URL as proofs name it: ``public_url`` + path when configured."""
    base = state.config.public_url or f"{request.url.scheme}://{request.url.netloc}"
    return base + request.url.path


@dataclass
class CallContext:
    """One authenticated request: its caller, the server parts, the control-plane check."""

    request: Request
    state: ServerState
    principal: Principal

    @property
    def runtime(self) -> Runtime:
        return self.state.runtime

    @property
    def source(self) -> str | None:
        return client_address(self.request)

    def require(self, action: str, resource: dict[str, Any], *,
                context: dict[str, Any] | None = None) -> None:
        """Refuse (403, audited) unless the control-plane policies allow ``action``."""
        self.request.state.action = action
        try:
            self.state.control.require(
                self.principal, action, resource, context=context, source=self.source,
                detail={"method": self.request.method, "path": self.request.url.path[:500]})
        except ApiError:
            self.state.metrics.refusals.labels(action).inc()
            raise


    def record(self, action: str, target: str, outcome: str, *, task: str = "",
               detail: dict[str, Any] | None = None,
               undo: Callable[[], str] | None = None) -> None:
        """Audit a change made through the API, by the caller (an agent or a human).

        The change has taken effect. If its event cannot be written the answer is a
        503 ``audit_unavailable``, never a success: ``undo`` takes back a change
        that gives access (and the message says so); one that takes access away
        stands, and the message says it took effect."""
        now = self.runtime.clock.now()
        record_change(self.runtime.audit, AuditEvent(
            id=new_event_id(now), time=now, actor=self.principal.actor, action=action,
            target=target, outcome=outcome, task=task, source=self.source,
            detail=detail or {}), undo=undo)


def authenticate(request: Request, *, body: bytes, confirmed_later: bool = False,
                 single_use_body: bool = False) -> CallContext:
    """Authenticate the request, whose body as received is ``body`` (an agent's own-key
    proof is signed over it), and take a token from its principal's bucket (it reads
    and may write the store: call it off the event loop). Raises 401 or 429 problems.
    ``confirmed_later``, ``single_use_body``: what the route's own write does
    (:meth:`RequestAuthenticator.authenticate`)."""
    state = server_state(request)
    try:
        principal = state.authenticator.authenticate(
            request.headers, method=request.method, url=request_url(request, state),
            body=body, source=client_address(request), confirmed_later=confirmed_later,
            single_use_body=single_use_body)
    except ApiError:
        # Failed attempts are limited per client address: guessing credentials is slow.
        wait = state.limiter.take(f"client:{client_address(request)}")
        if wait:
            state.metrics.rate_limited.inc()
            raise ApiError("rate_limited", "too many failed attempts from this address",
                             headers=state.limiter.retry_after(wait)) from None
        raise
    request.state.principal = principal
    wait = state.limiter.take(principal.rate_key)
    if wait:
        state.metrics.rate_limited.inc()
        raise ApiError("rate_limited", f"{principal.kind.value} `{principal.id}` sends "
                         "requests faster than allowed", headers=state.limiter.retry_after(wait))
    return CallContext(request, state, principal)


async def _authenticated(request: Request,
                         _bearer_credentials: Annotated[Any, Security(bearer)],
                         _dpop_proof: Annotated[Any, Security(dpop)]) -> CallContext:
    body = await request.body()  # as the route's body was read: once, kept by the request
    return await anyio.to_thread.run_sync(functools.partial(authenticate, request, body=body))


Call = Annotated[CallContext, Depends(_authenticated)]
"""What a handler takes to be called only for an authenticated caller within its rate."""

Credentials = [Security(bearer), Security(dpop)]
"""The security schemes, for a route that authenticates by :func:`authenticate` itself."""
