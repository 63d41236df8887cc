"""The web console, served by ``proctor serve`` under ``/console``.

Server-rendered pages (Jinja2, autoescaped) and one small script, with no
build step: the approvals queue, the live audit stream, agents and their
drift, tasks with their grant trees, policies, the compliance report, pinned tools
and access paths. Humans sign in with an API
token (the admin token) or an OIDC token; the session is an HttpOnly,
SameSite=Strict cookie (Secure over HTTPS); every form post carries a CSRF
token; every response a strict Content-Security-Policy. Every page is
authorized by the control-plane Cedar policies, as the API is. See
``docs/console.md``.
"""

from __future__ import annotations

from fastapi import FastAPI

from proctor.server.console import (
    agents,
    approvals,
    assets,
    audit,
    compliance,
    login,
    policies,
    tasks,
    visibility,
)
from proctor.server.console.sessions import ConsoleSession, ConsoleSessions, csrf_for
from proctor.server.console.web import CSP

__all__ = ["CSP", "ConsoleSession", "ConsoleSessions", "csrf_for", "install_console"]


def install_console(app: FastAPI) -> None:
    """Add the console's routes (left out of the OpenAPI document) to ``app``."""
    for module in (assets, login, approvals, audit, agents, tasks, policies, compliance,
                   visibility):
        app.include_router(module.router)
