"""Starting a task, with its audit event, in one transaction.

A task is what an agent's grants are issued under: starting one gives access. Its
``task.start`` event is written in the same transaction as the task's row and its
lease node (the audit writer's, :mod:`proctor.oversight.audited`): the log holds the
event if and only if the task exists. The event used to be written after the task had
committed, so a process that died between the two left a task open for grants with
nothing in the log saying who started it.

The agent is checked as active when the task is made
(:meth:`~proctor.grants.authority.GrantAuthority.new_task`) and again in the
transaction (``agent_not_active``: suspended or retired meanwhile, nothing written). If
the audit log cannot be written, no task is started
(:class:`~proctor.errors.AuditUnavailableError`; it used to be started, then ended).
"""

from __future__ import annotations

from dataclasses import dataclass

from proctor.audit import Actor, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.audit.writer import WITHDRAWN
from proctor.errors import AgentError, ProctorError
from proctor.grants.authority import GrantAuthority, task_columns
from proctor.grants.tasks import Task
from proctor.identity.agent import ACTIVE_STATES
from proctor.oversight.audited import commit_with_event, insert_row
from proctor.store.tables import leases, tasks

__all__ = ["start_task"]

_STATE = "SELECT trust_state FROM agents WHERE id = {p}"
_ACTIVE = frozenset(state.value for state in ACTIVE_STATES)


@dataclass(slots=True)
class _Start:
    """The task's row and its lease node, if its agent is still active."""

    task: Task
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.refusal = None  # a retried batch applies it again
        task = self.task
        found = tx.rows(_STATE + tx.for_share, [task.agent_id])
        if not found or found[0][0] not in _ACTIVE:
            self.refusal = AgentError("agent_not_active",
                                      f"agent `{task.agent_id}` is suspended or retired")
            return WITHDRAWN
        insert_row(tx, tasks, task_columns(task))
        insert_row(tx, leases, {
            "id": task.id, "parent_id": None, "kind": "task", "task_id": task.id,
            "agent_id": task.agent_id, "created_at": task.started_at,
            "expires_at": task.expires_at})
        return None


def start_task(grants: GrantAuthority, audit: AuditLog, agent_id: str, *, by: Actor,
               purpose: str, on_behalf_of: str, ttl_seconds: int | None = None,
               idle_seconds: int | None = None, source: str | None = None) -> Task:
    """Start a task for ``agent_id`` as :meth:`GrantAuthority.start_task` does, with its
    ``task.start`` event by ``by``; the task. Raises what the authority refuses, or
    :class:`~proctor.errors.AuditUnavailableError`: then no task was started."""
    task = grants.new_task(agent_id, purpose=purpose, on_behalf_of=on_behalf_of,
                           ttl_seconds=ttl_seconds, idle_seconds=idle_seconds)
    now = task.started_at
    event = AuditEvent(id=new_event_id(now), time=now, actor=by, action="task.start",
                       target=f'Task::"{task.id}"', outcome="started", task=task.id,
                       source=source)
    commit_with_event(audit, event, _Start(task))
    return task
