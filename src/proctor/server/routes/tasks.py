"""Tasks: start one for an agent, read it, end it (revoking its tree), show its tree."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from proctor.grants import LeaseNode, Task
from proctor.identity.people import check_human
from proctor.oversight import starting
from proctor.server.bodies import RequestBody
from proctor.server.control import entity
from proctor.server.deps import Call, CallContext
from proctor.server.problems import problem_responses
from proctor.server.routes.agents import agent_for

__all__ = ["TaskView", "router", "task_resource"]

router = APIRouter(tags=["tasks"])

TaskId = Annotated[str, Path(max_length=64)]


class StartTask(RequestBody):
    agent: Annotated[str, Field(min_length=1, max_length=512,
                                description="SPIFFE ID, or a name in the trust domain")]
    purpose: Annotated[str, Field(max_length=1000)]
    on_behalf_of: Annotated[str, Field(min_length=1, max_length=256)]
    ttl_seconds: Annotated[int | None, Field(ge=1, description=(
        "seconds before the task ends by itself; at most the deployment's "
        "`task_max_seconds` (its default)"))] = None
    idle_seconds: Annotated[int | None, Field(ge=1, description=(
        "seconds without a call before the task ends by itself; at most the deployment's "
        "`task_idle_seconds` (its default)"))] = None


class EndTask(RequestBody):
    """No fields: ending a task takes none (any given is refused)."""


class TaskView(BaseModel):
    id: str
    agent: str
    purpose: str
    on_behalf_of: str
    started_at: datetime
    ended_at: datetime | None
    expires_at: datetime | None
    idle_seconds: int | None
    idle_until: datetime | None
    end_reason: str | None

    @classmethod
    def of(cls, task: Task) -> TaskView:
        return cls(id=task.id, agent=task.agent_id, purpose=task.purpose,
                   on_behalf_of=task.on_behalf_of, started_at=task.started_at,
                   ended_at=task.ended_at, expires_at=task.expires_at,
                   idle_seconds=task.idle_seconds, idle_until=task.idle_until,
                   end_reason=task.end_reason)


class Ended(BaseModel):
    task: str
    revoked: list[str]


class NodeView(BaseModel):
    id: str
    parent: str | None
    kind: str
    agent: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None

    @classmethod
    def of(cls, node: LeaseNode) -> NodeView:
        return cls(id=node.id, parent=node.parent_id, kind=node.kind, agent=node.agent_id,
                   created_at=node.created_at, expires_at=node.expires_at,
                   revoked_at=node.revoked_at, revoked_reason=node.revoked_reason)


class Tree(BaseModel):
    task: str
    nodes: list[NodeView]


def task_resource(task: Task) -> dict[str, Any]:
    return entity("Task", task.id, agent=("Agent", task.agent_id),
                  on_behalf_of=task.on_behalf_of)


def _task(call: CallContext, task_id: str, action: str) -> Task:
    task = call.runtime.grants.task(task_id)
    call.require(action, task_resource(task))
    return task


@router.post("/v1/tasks", status_code=201, responses=problem_responses(
    "agent_unknown", "agent_id_invalid", "agent_not_active", "task_ttl_invalid"))
def start_task(body: StartTask, call: Call) -> TaskView:
    """Start a task for an agent. An agent may start one for itself, on behalf of its
    owner; admins for any agent. ``on_behalf_of`` is compared with the agent's owner,
    and kept, in its canonical form (``Bob@Acme.example`` is ``bob@acme.example``)."""
    runtime = call.runtime
    on_behalf_of = check_human(body.on_behalf_of, "human a task acts for")
    agent = agent_for(call, body.agent, "api:task.start",
                      context={"on_behalf_of": on_behalf_of})
    # with its event, in one transaction (an outage: no task, and 503)
    task = starting.start_task(runtime.grants, runtime.audit, agent.id, by=call.principal.actor,
                               purpose=body.purpose, on_behalf_of=on_behalf_of,
                               ttl_seconds=body.ttl_seconds, idle_seconds=body.idle_seconds,
                               source=call.source)
    return TaskView.of(task)


@router.get("/v1/tasks/{task_id}", responses=problem_responses("task_unknown"))
def read_task(task_id: TaskId, call: Call) -> TaskView:
    """One task."""
    return TaskView.of(_task(call, task_id, "api:task.read"))


@router.post("/v1/tasks/{task_id}/end", responses=problem_responses("task_unknown"))
def end_task(task_id: TaskId, call: Call,
             body: EndTask | None = None) -> Ended:
    """End the task: every grant issued under it, and all derived from them, is revoked."""
    task = _task(call, task_id, "api:task.end")
    revoked = call.runtime.grants.end_task(task.id, by=call.principal.actor)
    return Ended(task=task.id, revoked=revoked)


@router.get("/v1/tasks/{task_id}/tree", responses=problem_responses("task_unknown"))
def task_tree(task_id: TaskId, call: Call) -> Tree:
    """The task's lease tree: its grants and what was delegated from them, parents first."""
    task = _task(call, task_id, "api:grant.tree")
    return Tree(task=task.id, nodes=[NodeView.of(n) for n in call.runtime.grants.tree(task.id)])
