"""The control-plane API as an ASGI application.

>>> app = create_app(open_runtime(load_settings()))         # doctest: +SKIP
>>> httpx.AsyncClient(transport=httpx.ASGITransport(app))   # doctest: +SKIP

Every error is a problem document (:mod:`proctor.server.problems`); every
403 is audited. The background work (sweeping expired leases, following
policy, agent and shadow changes other processes make, hearing revocations on
PostgreSQL) runs in the application's lifespan; :class:`Background` can also
be driven by hand.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from proctor import __version__
from proctor.codes import Code
from proctor.errors import ApiError, ProctorError
from proctor.runtime import Runtime
from proctor.server.background import Background
from proctor.server.config import ServerConfig
from proctor.server.console import install_console
from proctor.server.deps import client_address, server_state
from proctor.server.limits import BodyLimit
from proctor.server.metrics import MetricsMiddleware
from proctor.server.problems import problem_of, problem_response
from proctor.server.routes import ROUTERS
from proctor.server.routes.decide import DirectDecide
from proctor.server.state import ServerState

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DESCRIPTION = """\
proctor's control plane: agents, tasks, grants, tool-call decisions, policies and the
audit log. Humans authenticate with an API token or an OIDC token; agents with a
workload proof or a grant and a DPoP proof. Every operation is authorized by
proctor's control-plane Cedar policies; every refusal is audited. Errors are RFC 9457
problem documents whose `code` is stable.
"""


def create_app(runtime: Runtime, config: ServerConfig | None = None, *,
               owns_runtime: bool = False) -> FastAPI:
    """The API on ``runtime``; with ``owns_runtime`` the app closes it on shutdown."""
    state = ServerState.build(runtime, config or ServerConfig())
    background = Background(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await background.start()
        try:
            yield
        finally:
            await background.stop()
            if owns_runtime:
                runtime.close()

    # FastAPI's own OpenTelemetry is off: the API's spans are proctor's (POST /v1/decide
    # joins the caller's trace), and FastAPI asks the global providers on every request
    # whether it is on, about as long as the rest of the request's routing.
    app = FastAPI(title="proctor control plane", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.proctor = state
    app.state.background = background
    for router in ROUTERS:
        app.include_router(router)
    install_console(app)
    on_proctor_error = _add_handlers(app)
    # innermost of the app's own middleware: inside the metrics and the body limits
    app.add_middleware(DirectDecide, on_error=on_proctor_error)
    app.add_middleware(BodyLimit, max_bytes=state.config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, clock=runtime.clock)
    return app


def _add_handlers(app: FastAPI) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Install the problem handlers; returns the one for proctor's errors."""
    async def proctor_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProctorError)
        problem = problem_of(exc)
        # a 403, or an issuance the policy engine failed on (500): refused all the same
        if (problem.status == 403 or problem.code == "engine_error") and not problem.audited:
            await anyio.to_thread.run_sync(_audit_refusal, request, problem)
        return problem_response(problem.status, problem.code, problem.message,
                                instance=request.url.path, headers=problem.headers,
                                extra=problem.extra)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Without the input: it may hold a token or a proof.
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()[:20]]
        first = errors[0] if errors else {"loc": [], "message": "invalid"}
        where = ".".join(first["loc"]) or "request"
        return problem_response(422, "request_invalid", f"`{where}`: {first['message']}",
                                instance=request.url.path, extra={"errors": errors})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot even decode
            return problem_response(422, "request_invalid", "the body is not valid JSON",
                                    instance=request.url.path)
        code: Code = ("not_found" if exc.status_code == 404 else "method_not_allowed"
                      if exc.status_code == 405 else "http_error")
        return problem_response(exc.status_code, code, str(exc.detail),
                                instance=request.url.path, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return problem_response(500, "internal_error", "the request failed inside proctor",
                                instance=request.url.path)

    app.add_exception_handler(ProctorError, proctor_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    return proctor_error


def _audit_refusal(request: Request, exc: ApiError) -> None:
    """A 403 not decided by the control-plane policies (a revoked grant, a denied
    issuance, ...) is audited here, once."""
    state = server_state(request)
    principal = getattr(request.state, "principal", None)
    route = request.scope.get("route")
    action = getattr(request.state, "action", None) or (
        f"{request.method} {getattr(route, 'path', request.url.path)}")
    state.metrics.refusals.labels(action).inc()
    state.control.record_refusal(
        principal, action, f"api:{request.url.path[:200]}", exc.code, (exc.message,),
        source=client_address(request),
        detail={"method": request.method, "path": request.url.path[:500]})
