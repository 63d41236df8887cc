"""Signing in to the console with a human's credential, and out again.

The sign-in form takes what a human authenticates to the API with: an API
token (``ptk_…``; the admin token from ``proctor init`` is one) or an OIDC
token from a configured issuer. It is checked exactly as the API checks a
bearer token; an agent's credential is refused (403, audited) — agents never
sign in to the console. Failed attempts are rate-limited per client address.
The form itself carries a CSRF token bound to a short-lived sign-in cookie.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from proctor.audit import AuditEvent, human_event
from proctor.errors import ApiError, ProctorError
from proctor.identity.tokens import peek
from proctor.server.console.sessions import COOKIE, MAX_SESSION_SECONDS, ConsoleSessions, csrf_for
from proctor.server.console.web import ConsoleCall, ConsoleRoute, check_csrf, is_https, templates
from proctor.server.deps import client_address, request_url, server_state
from proctor.server.principals import PrincipalKind

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

LOGIN_COOKIE = "proctor_login"
_MAX_TOKEN = 16 * 1024


def _safe_next(value: str) -> str:
    """Only a console path: never another site (``//evil``) or a scheme."""
    ok = value.startswith("/console") and not value.startswith("//") and "\\" not in value \
        and all(0x20 < ord(c) < 0x7f for c in value)
    return value if ok and value != "/console/login" else "/console/approvals"


def _form(request: Request, *, error: str = "", status: int = 200) -> Response:
    state = server_state(request)
    nonce = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(request, "login.html", {
        "viewer": None, "section": "login", "csrf": csrf_for(nonce), "error": error,
        "next": _safe_next(request.query_params.get("next", "")),
        "oidc": [i.issuer for i in state.config.oidc_issuers]}, status_code=status)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict",
                        secure=is_https(request, state), path="/console")
    return response


@router.get("/console/login")
def login_form(request: Request) -> Response:
    return _form(request)


@router.post("/console/login")
def login(request: Request, token: Annotated[str, Form(max_length=_MAX_TOKEN)] = "",
          csrf: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=500)] = "/console/approvals",
          ) -> Response:
    state = server_state(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf.encode(), csrf_for(nonce).encode()):
        request.state.action = "console.login"
        raise ApiError("csrf_invalid", "the sign-in form expired or was not ours: "
                       "load it again")
    source = client_address(request)
    try:
        principal = state.authenticator.authenticate(
            {"authorization": f"Bearer {token.strip()}"}, method="POST",
            url=request_url(request, state))
    except ProctorError as exc:
        if state.limiter.take(f"client:{source}"):
            raise ApiError("rate_limited", "too many failed sign-ins from this address; "
                           "wait a minute") from None
        return _form(request, error=f"not signed in: {exc.message}", status=401)
    request.state.principal = principal
    if principal.kind is PrincipalKind.AGENT:
        request.state.action = "console.login"
        raise ApiError("forbidden", "agents never sign in to the console")
    expires_at = None
    if principal.method == "oidc":
        exp = peek(token.strip()).claims.get("exp")
        expires_at = datetime.fromtimestamp(int(exp), UTC) if isinstance(
            exp, int | float) and not isinstance(exp, bool) else None
    # opened with its event, in one transaction; unaudited: no session (503)
    cookie, session = ConsoleSessions(state.runtime.store, state.runtime.clock).open(
        principal.id, principal.roles, method=principal.method,
        credential=principal.credential if principal.method == "api_token" else "",
        expires_at=expires_at, audit=state.runtime.audit,
        event=_event(request, principal.id, "console.login", "signed_in",
                     f"with {principal.method}"))
    response = RedirectResponse(_safe_next(next), status_code=303)
    seconds = int((session.expires_at - session.created_at).total_seconds())
    response.set_cookie(COOKIE, cookie, max_age=min(seconds, MAX_SESSION_SECONDS),
                        httponly=True, samesite="strict", secure=is_https(request, state),
                        path="/console")
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/console/logout")
async def logout(request: Request, console: ConsoleCall) -> Response:
    await check_csrf(request, console)
    # ended with its event, in one transaction; unaudited: ended all the same (503)
    ConsoleSessions(console.runtime.store, console.runtime.clock).end(
        request.cookies.get(COOKIE, ""), audit=console.runtime.audit,
        event=_event(request, console.principal.id, "console.logout", "signed_out", ""))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


def _event(request: Request, human: str, action: str, outcome: str,
           reason: str) -> AuditEvent:
    state = server_state(request)
    return human_event(human, action, "Service::\"console\"", outcome,
                       now=state.runtime.clock.now(), reason=reason,
                       source=client_address(request))
