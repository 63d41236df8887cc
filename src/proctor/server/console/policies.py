"""Policies: the active revision and its policies, candidates with their validation
errors (validated again now, against today's schema), the shadowed candidate's
differences, and a form to validate a policy file before uploading it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from proctor.errors import Diagnostic, PolicyValidationError
from proctor.policy.revisions import digest_sources
from proctor.server.console.queries import pending_count
from proctor.server.console.web import Console, ConsoleCall, ConsoleRoute, check_csrf, render
from proctor.server.control import service

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_CANDIDATES = 10
_MAX_SOURCE = 256 * 1024


def _candidates(console: Console) -> list[dict[str, Any]]:
    shown = []
    policies = console.runtime.policies
    for revision in policies.list_revisions(status="candidate")[:_CANDIDATES]:
        errors: list[Diagnostic] = []
        count = 0
        try:
            count = len(policies.compile(revision.id))
        except PolicyValidationError as exc:
            errors = list(exc.diagnostics)
        shown.append({"revision": revision, "errors": errors, "policies": count})
    return shown


def _page(console: Console, **extra: Any) -> Response:
    console.require("api:policy.list", service("policies"))
    runtime, control = console.runtime, console.state.control
    active = runtime.engine.active
    revisions = runtime.policies.list_revisions()
    current = next((r for r in revisions if r.status == "active"), None)
    shadow: dict[str, Any] = {"status": None, "total": 0, "recent": []}
    if control.decide(console.principal, "api:policy.shadow_results",
                      service("policies")).is_allowed:
        console.state.shadow.flush()
        status = console.state.shadow.status()
        total, recent = (console.state.shadow.results(status.revision, limit=50)
                         if status.revision is not None else (0, []))
        shadow = {"status": status, "total": total, "recent": recent}
    return render(console, "policies.html", "policies", current=current,
                  policies=sorted(active.policies.values(), key=lambda p: (p.file, p.line))
                  if active else [],
                  revisions=revisions[:20], candidates=_candidates(console), shadow=shadow,
                  pending=pending_count(runtime.store, console.now),
                  may_validate=control.decide(console.principal, "api:policy.validate",
                                              service("policies")).is_allowed, **extra)


@router.get("/console/policies")
def policies_page(console: ConsoleCall) -> Response:
    return _page(console)


@router.post("/console/policies/validate")
async def validate(request: Request, console: ConsoleCall) -> Response:
    """Validate one pasted policy file against this deployment's schema; nothing stored."""
    form = await check_csrf(request, console)
    console.require("api:policy.validate", service("policies"))
    name = (form.get("name", "") or "candidate.cedar")[:200]
    text = form.get("source", "")[:_MAX_SOURCE]
    sources = {name if name.endswith(".cedar") else f"{name}.cedar": text}
    try:
        compiled = console.runtime.engine.compile(sources, digest=digest_sources(sources))
        result: dict[str, Any] = {"valid": True, "policies": len(compiled), "errors": []}
    except PolicyValidationError as exc:
        result = {"valid": False, "policies": 0, "errors": list(exc.diagnostics)}
    return _page(console, validation=result, submitted={"name": name, "source": text})
