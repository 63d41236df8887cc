"""Agents: trust state at a glance; for a drifted agent, the manifest diff and a review.

Reviewing adopts the presented manifest — only if it is still the one the
reviewer saw (its digest is in the form) — and trusts the agent again.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from proctor.identity import TrustState
from proctor.oversight.standing import change_standing
from proctor.oversight.trusting import review_agent
from proctor.server.console.queries import pending_count
from proctor.server.console.web import ConsoleCall, ConsoleRoute, check_csrf, render
from proctor.server.control import service
from proctor.server.routes.agents import agent_for, agent_resource

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_ORDER = {"drifted": 0, "suspended": 1, "trusted": 2, "retired": 3}


@router.get("/console/agents")
def agents_page(console: ConsoleCall) -> Response:
    console.require("api:agent.list", service("agents"))
    agents = sorted(console.runtime.registry.list_agents(),
                    key=lambda a: (_ORDER.get(a.trust_state.value, 9), a.id))
    return render(console, "agents.html", "agents", agents=agents,
                  pending=pending_count(console.runtime.store, console.now))


@router.get("/console/agents/{agent_id:path}/view")
def agent_page(agent_id: str, console: ConsoleCall) -> Response:
    agent = agent_for(console, agent_id, "api:agent.read")
    differences = (agent.manifest.differences(agent.presented_manifest)
                   if agent.presented_manifest is not None else {})
    may_review = console.state.control.decide(
        console.principal, "api:agent.review", agent_resource(agent)).is_allowed
    may_suspend = console.state.control.decide(
        console.principal, "api:agent.suspend", agent_resource(agent)).is_allowed
    return render(console, "agent.html", "agents", agent=agent, differences=differences,
                  reviewed=agent.manifest.as_json(),
                  presented=agent.presented_manifest.as_json()
                  if agent.presented_manifest else None,
                  may_review=may_review, may_suspend=may_suspend,
                  risk=console.runtime.risk.view(agent.id).as_json(),
                  pending=pending_count(console.runtime.store, console.now))


@router.post("/console/agents/{agent_id:path}/review")
async def review(agent_id: str, request: Request, console: ConsoleCall) -> Response:
    form = await check_csrf(request, console)
    agent = agent_for(console, agent_id, "api:agent.review")
    # the digest of the manifest the page showed; none: review_digest_missing (400)
    expected = form.get("expected_digest", "")
    runtime = console.runtime
    review_agent(runtime.registry, runtime.audit, runtime.clock, agent.id,
                 reviewer=console.principal.id, expected_digest=expected,
                 source=console.source)
    runtime.enforcer.refresh_principals()
    return RedirectResponse(f"/console/agents/{agent.id}/view", status_code=303)


@router.post("/console/agents/{agent_id:path}/suspend")
async def suspend(agent_id: str, request: Request, console: ConsoleCall) -> Response:
    form = await check_csrf(request, console)
    agent = agent_for(console, agent_id, "api:agent.suspend")
    reason = form.get("reason", "")[:500] or "suspended from the console"
    runtime = console.runtime
    try:
        change_standing(runtime.registry, runtime.audit, runtime.clock, runtime.grants.leases,
                        agent.id, TrustState.SUSPENDED, by=console.principal.id, reason=reason,
                        source=console.source)
    finally:  # made alone (503) it stands all the same: the engine learns it either way
        runtime.enforcer.refresh_principals()
    return RedirectResponse(f"/console/agents/{agent.id}/view", status_code=303)
