"""The console's plumbing: who is signed in, CSRF, security headers, rendering.

Every console response carries a strict Content-Security-Policy (scripts and
styles from the console's own static files only: no inline script, no inline
style, no framing), ``nosniff``, ``no-referrer`` and ``no-store``. Every page
is authorized by the same control-plane Cedar policies as the API, for the
signed-in human; a refusal is a 403 page and an audit event. Every form post
carries the session's CSRF token; one without it is refused (403, audited).
Templates autoescape everything: agent-supplied text (tool arguments, agent
names, reasons) is shown as text.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from proctor.errors import ApiError, ProctorError, RequestError
from proctor.server.console.sessions import COOKIE, ConsoleSessions, csrf_for
from proctor.server.console.shown import register_filters
from proctor.server.deps import CallContext, client_address, server_state
from proctor.server.principals import Principal, PrincipalKind
from proctor.server.problems import problem_of
from proctor.server.state import ServerState

__all__ = ["CSP", "Console", "ConsoleCall", "ConsoleRoute", "NotSignedInError", "SignedOutError",
           "check_csrf", "is_https", "render", "templates"]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin"}

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.autoescape = True  # every template, whatever its name
register_filters(templates.env)


class NotSignedInError(Exception):
    """No live session: pages redirect to the sign-in form."""


class SignedOutError(Exception):
    """A live session whose human today's sign-in rules refuse: ended and audited; the
    page (401, the API's code) says why, and the browser's cookie is dropped."""

    def __init__(self, refusal: ApiError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class ConsoleRoute(APIRoute):
    """A console route: errors become pages, every response gets the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotSignedInError:
                target = quote(request.url.path, safe="/")
                response = RedirectResponse(f"/console/login?next={target}", status_code=303)
            except SignedOutError as exc:
                response = templates.TemplateResponse(request, "error.html", {
                    "viewer": None, "status": 401, "code": exc.refusal.code,
                    "detail": f"signed out: {exc.refusal.message}", "signed_out": True,
                    "section": ""}, status_code=401)
                response.delete_cookie(COOKIE, path="/console")
            except ProctorError as exc:
                response = _error_page(request, exc)
            except RequestValidationError:
                response = _error_page(request, RequestError(
                    "the form or address is not valid"))
            response.headers.update(HEADERS)
            return response

        return console_handler


def _error_page(request: Request, exc: ProctorError) -> Response:
    problem = exc if isinstance(exc, ApiError) else problem_of(exc)
    state = server_state(request)
    if problem.status == 403 and not problem.audited:
        principal = getattr(request.state, "principal", None)
        action = getattr(request.state, "action", None) or f"console {request.method}"
        state.control.record_refusal(
            principal, action, f"console:{request.url.path[:200]}", problem.code,
            (problem.message,), source=client_address(request),
            detail={"method": request.method, "path": request.url.path[:500]})
    if problem.status >= 500:
        log.error("console %s %s failed: %s", request.method, request.url.path, problem.code)
    viewer = getattr(request.state, "viewer", None)
    return templates.TemplateResponse(
        request, "error.html", {"viewer": viewer, "status": problem.status,
                                "code": problem.code, "detail": problem.message,
                                "section": ""},
        status_code=problem.status, headers=problem.headers)


@dataclass
class Console(CallContext):
    """A signed-in human's request: the API's call context, plus the session's CSRF."""

    csrf: str = ""
    session_id: str = ""

    @property
    def now(self) -> datetime:
        return self.runtime.clock.now()


def is_https(request: Request, state: ServerState) -> bool:
    return request.url.scheme == "https" or state.config.public_url.startswith("https://")


def _signed_in(request: Request) -> Console:
    state = server_state(request)
    cookie = request.cookies.get(COOKIE, "")
    sessions = ConsoleSessions(state.runtime.store, state.runtime.clock)
    session = sessions.find(cookie)
    if session is None:
        raise NotSignedInError
    principal = Principal(PrincipalKind.HUMAN, session.human_id, session.roles,
                          f"console:{session.method}", credential=session.id)
    request.state.principal = principal
    # the API's checks of its human at each request, as the API makes them at each use
    refused = state.authenticator.human_refusal(session.human_id, session.method)
    if refused is not None:
        _sign_out(request, state, sessions, cookie, principal, refused)
    wait = state.limiter.take(principal.rate_key)
    if wait:
        raise ApiError("rate_limited", "too many requests; wait a moment",
                       headers=state.limiter.retry_after(wait))
    console = Console(request, state, principal, csrf_for(cookie), session.id)
    request.state.viewer = {"id": principal.id, "roles": sorted(principal.roles),
                            "csrf": console.csrf}
    return console


ConsoleCall = Annotated[Console, Depends(_signed_in)]


def _sign_out(request: Request, state: ServerState, sessions: ConsoleSessions, cookie: str,
              principal: Principal, refused: ApiError) -> NoReturn:
    """End the session of ``cookie``, whose human the API refuses now (``refused``), and
    audit it as the API's refusals are (``console.session``, refused, the API's code and
    reason, the session ended), before nothing else of the request is done."""
    sessions.end(cookie)
    state.control.record_refusal(
        principal, "console.session", f"console:{request.url.path[:200]}", refused.code,
        (refused.message,), source=client_address(request),
        detail={"method": request.method, "path": request.url.path[:500],
                "session": principal.credential, "ended": True})
    raise SignedOutError(refused)


async def check_csrf(request: Request, console: Console) -> dict[str, str]:
    """The posted form, once its ``csrf`` field matches the session's; else 403 (audited)."""
    form = await request.form()
    # a field given twice was read as its last value (a JSON body's repeated key is refused
    # too): refused, after the CSRF check (a token given twice is no token); a file where
    # a form's fields are text is no field of ours
    fields: dict[str, str] = {}
    seen: set[str] = set()
    twice: str | None = None
    for key, value in form.multi_items():
        if key in seen:
            twice = twice or key
        seen.add(key)
        if isinstance(value, str):
            fields[key] = value
    sent = fields.get("csrf", "") if twice != "csrf" else ""
    if not sent or not hmac.compare_digest(sent.encode(), console.csrf.encode()):
        request.state.action = f"console {request.method} {request.url.path[:200]}"
        raise ApiError("csrf_invalid", "the form's CSRF token is missing or wrong: "
                       "reload the page and try again")
    if twice is not None:
        raise RequestError(f"the form gives the field `{twice[:80]}` twice")
    return fields


def render(console: Console, name: str, section: str, **context: Any) -> Response:
    """A page for the signed-in human."""
    viewer = {"id": console.principal.id, "roles": sorted(console.principal.roles),
              "csrf": console.csrf}
    return templates.TemplateResponse(console.request, name, {
        "viewer": viewer, "section": section, "now": console.now, **context})
