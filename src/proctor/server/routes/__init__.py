"""The API's routes, one module per resource.

To add a resource (e.g. approvals), write a module with an ``APIRouter`` and
add it to :data:`ROUTERS`; handlers take :data:`proctor.server.deps.Call` and
check the control plane with ``call.require("api:…", resource)``.
"""

from fastapi import APIRouter

from proctor.server.routes import (
    agents,
    approvals,
    audit,
    connectors,
    decide,
    grants,
    policies,
    public,
    tasks,
    tools,
)

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    public.router,
    agents.router,
    tasks.router,
    grants.router,
    decide.router,
    policies.router,
    audit.router,
    approvals.router,
    connectors.router,
    tools.router,
]
