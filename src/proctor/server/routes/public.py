"""Liveness, readiness, the grant issuer's keys, metrics, and who the caller is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from proctor.errors import ApiError, ProctorError
from proctor.server.deps import Call, server_state
from proctor.server.problems import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    policy_revision: int


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


class WhoAmI(BaseModel):
    type: str
    id: str
    roles: list[str]
    method: str
    owner: str | None


@router.get("/healthz", responses=problem_responses(public=True))
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", responses=problem_responses(
    public=True, extra={503: ["not_ready"]}))
def readyz(request: Request) -> Readiness:
    """Readiness: the database answers and a policy set is active."""
    runtime = server_state(request).runtime
    try:
        runtime.store.fetch("SELECT 1", [])
    except ProctorError as exc:
        raise ApiError("not_ready", f"the database does not answer: {exc.message}") \
            from exc
    active = runtime.engine.active
    if active is None or active.revision is None:
        raise ApiError("not_ready", "no policy set is active")
    return Readiness(status="ready", database=runtime.store.backend,
                     policy_revision=active.revision)


@router.get("/.well-known/jwks.json", responses=problem_responses(public=True))
def jwks(request: Request) -> Jwks:
    """The public keys that verify live grants (ES256), for other enforcement points."""
    keyring = server_state(request).keyring
    keyring.current()  # the first key is made on first use; publish it from the start
    return Jwks(**keyring.jwks())


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition"},
    **problem_responses(public=True)})
def metrics(request: Request) -> Response:
    """Prometheus metrics: decisions by outcome, latencies, refusals (counts only)."""
    body, content_type = server_state(request).metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/whoami", responses=problem_responses())
def whoami(call: Call) -> WhoAmI:
    """The authenticated caller, as the control plane sees it."""
    return WhoAmI(**call.principal.as_json())
