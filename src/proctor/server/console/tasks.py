"""Tasks and their grant trees: revoke any grant, and see the cascade it took down.

Each live grant shows how many live nodes below it its revocation also takes;
after a revocation the page lists every node it revoked, and revoked nodes
stay in the tree, struck through, with the reason.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import RedirectResponse, Response

from proctor.errors import GrantError
from proctor.server.console.queries import pending_count, recent_tasks, task_tree
from proctor.server.console.web import ConsoleCall, ConsoleRoute, check_csrf, render
from proctor.server.routes.approvals import desk_for
from proctor.server.routes.grants import grant_resource
from proctor.server.routes.tasks import task_resource

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

TaskId = Annotated[str, Path(min_length=1, max_length=64)]
_REVOKED = re.compile(r"[0-9]{1,6}")


@router.get("/console/tasks")
def tasks_page(console: ConsoleCall) -> Response:
    """The newest tasks this human may read (others are left out, not refused)."""
    control = console.state.control
    rows = [(task, live) for task, live in recent_tasks(console.runtime.store)
            if control.decide(console.principal, "api:task.read",
                              task_resource(task)).is_allowed]
    return render(console, "tasks.html", "tasks", rows=rows,
                  pending=pending_count(console.runtime.store, console.now))


@router.get("/console/tasks/{task_id}")
def task_page(task_id: TaskId, console: ConsoleCall) -> Response:
    runtime = console.runtime
    task = runtime.grants.task(task_id)
    console.require("api:grant.tree", task_resource(task))
    similar = desk_for(console).similar.for_task(task.id)
    nodes = task_tree(runtime.store, runtime.grants.tree(task.id), similar)
    may_revoke = {n.node.id for n in nodes if n.node.kind == "grant" and not n.node.is_revoked
                  and console.state.control.decide(
                      console.principal, "api:grant.revoke", grant_resource(
                          {"id": n.node.id, "agent": n.node.agent_id,
                           "task": task.id})).is_allowed}
    revoked = console.request.query_params.get("revoked", "")
    return render(console, "task.html", "tasks", task=task, nodes=nodes,
                  may_revoke=may_revoke,
                  just_revoked=int(revoked) if _REVOKED.fullmatch(revoked) else None,
                  pending=pending_count(runtime.store, console.now))


@router.post("/console/tasks/{task_id}/revoke")
async def revoke(task_id: TaskId, request: Request, console: ConsoleCall) -> Response:
    form = await check_csrf(request, console)
    runtime = console.runtime
    task = runtime.grants.task(task_id)
    node = runtime.grants.leases.node(form.get("node", "")[:64])
    if node is None or node.task_id != task.id or node.kind != "grant":
        raise GrantError("grant_unknown", "that grant is not in this task")
    console.require("api:grant.revoke", grant_resource(
        {"id": node.id, "agent": node.agent_id, "task": task.id}))
    reason = form.get("reason", "")[:500] or f"revoked from the console by {console.principal.id}"
    revoked = runtime.grants.revoke(node.id, reason, by=console.principal.actor)
    return RedirectResponse(f"/console/tasks/{task.id}?revoked={len(revoked)}",
                            status_code=303)
