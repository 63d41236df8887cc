"""Tasks: the unit of agent work that grants hang off, and how a task ends by itself.

A task has a maximum lifetime (``expires_at``) and an idle timeout: each use of
one of its grants moves ``idle_until`` to ``idle_seconds`` after that use. A
task past either is over: the next use of any of its grants is refused
(``task_expired``, ``task_idle``) and the task is ended like ``task end`` — its
whole tree revoked, audited with the reason — by that refusal or by the sweeper,
whichever comes first. No grant outlives its task's maximum lifetime: its
expiry is clamped to the task's at issuance.

Defaults a security engineer would pick for agent work: at most 8 hours, and
30 minutes without a call. Both are configurable (``task_max_seconds``,
``task_idle_seconds``); a task may ask for less, never more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select, update

from proctor.audit import WriteCursor
from proctor.errors import GrantError
from proctor.human_ids import canonical_human_id
from proctor.store import as_utc
from proctor.store.tables import tasks

__all__ = ["DEFAULT_TASK_IDLE_SECONDS", "DEFAULT_TASK_MAX_SECONDS", "Task", "TaskLimits",
           "due_tasks", "end_task", "task_from_row", "touch_task"]

DEFAULT_TASK_MAX_SECONDS = 8 * 3600
DEFAULT_TASK_IDLE_SECONDS = 30 * 60
# A task limit may be as long as a week: longer is standing access by another name.
_LONGEST = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """The deployment's limits: the longest a task may live, and be idle."""

    max_seconds: int = DEFAULT_TASK_MAX_SECONDS
    idle_seconds: int = DEFAULT_TASK_IDLE_SECONDS

    def __post_init__(self) -> None:
        for name, value in (("task_max_seconds", self.max_seconds),
                            ("task_idle_seconds", self.idle_seconds)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 60 <= value <= _LONGEST:
                raise GrantError("task_limits_invalid",
                                 f"`{name}` must be between 60 and {_LONGEST} seconds")

    def resolve(self, ttl_seconds: int | None, idle_seconds: int | None) -> tuple[int, int]:
        """A task's own lifetime and idle timeout: as asked, never over the limits."""
        ttl = self.max_seconds if ttl_seconds is None else ttl_seconds
        idle = self.idle_seconds if idle_seconds is None else idle_seconds
        if isinstance(ttl, bool) or not 1 <= ttl <= self.max_seconds:
            raise GrantError("task_ttl_invalid", f"a task lives between 1 and "
                             f"{self.max_seconds} seconds")
        if isinstance(idle, bool) or not 1 <= idle <= self.idle_seconds:
            raise GrantError("task_ttl_invalid", f"a task's idle timeout is between 1 and "
                             f"{self.idle_seconds} seconds")
        return ttl, idle


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    agent_id: str
    purpose: str
    on_behalf_of: str
    started_at: datetime
    ended_at: datetime | None
    sensitivity_seen: int = 0  # rank of the highest data label an allowed call has read
    expires_at: datetime | None = None
    idle_seconds: int | None = None
    idle_until: datetime | None = None
    end_reason: str | None = None

    def lapse(self, now: datetime) -> GrantError | None:
        """Why the task is over at ``now`` although nobody ended it, or None."""
        if self.expires_at is not None and now >= self.expires_at:
            return GrantError("task_expired", f"task `{self.id}` reached its maximum lifetime")
        if self.idle_until is not None and now >= self.idle_until:
            return GrantError("task_idle", f"task `{self.id}` ended after "
                              f"{self.idle_seconds} seconds without a call")
        return None


def task_from_row(r: Row[Any]) -> Task:
    # canonical on read too: a row an older node wrote still compares as its human
    return Task(
        r.id, r.agent_id, r.purpose, canonical_human_id(r.on_behalf_of), as_utc(r.started_at),
        as_utc(r.ended_at) if r.ended_at else None, int(r.sensitivity_seen),
        as_utc(r.expires_at) if r.expires_at else None, r.idle_seconds,
        as_utc(r.idle_until) if r.idle_until else None, r.end_reason,
    )


def touch_task(conn: Connection, task_id: str, now: datetime) -> None:
    """Count one use of a grant of the task as activity; refuse if the task is over."""
    row = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
    if row is None:
        raise GrantError("task_unknown", f"task `{task_id}` does not exist")
    task = task_from_row(row)
    if task.ended_at is not None:
        raise GrantError("task_ended", f"task `{task_id}` has ended")
    lapsed = task.lapse(now)
    if lapsed is not None:
        raise lapsed
    if task.idle_seconds is not None:
        conn.execute(update(tasks).where(tasks.c.id == task_id)
                     .values(idle_until=now + timedelta(seconds=task.idle_seconds)))


def due_tasks(conn: Connection, now: datetime) -> list[tuple[str, str]]:
    """Open tasks past their lifetime or idle timeout, with the reason for each."""
    rows = conn.execute(select(tasks.c.id, tasks.c.expires_at).where(and_(
        tasks.c.ended_at.is_(None),
        or_(tasks.c.expires_at <= now, tasks.c.idle_until <= now)))).all()
    return [(r.id, "maximum lifetime reached"
             if r.expires_at is not None and as_utc(r.expires_at) <= now else "idle timeout")
            for r in rows]


_END_TASK = ("UPDATE tasks SET ended_at = {p}, end_reason = {p} WHERE id = {p} "
             "AND ended_at IS NULL")


def end_task(tx: WriteCursor, task_id: str, reason: str, now: datetime) -> bool:
    """Mark the task ended in ``tx``'s transaction (its revocation's); False if it had
    ended already."""
    return tx.execute(_END_TASK, [tx.time(now), reason[:500], task_id]) == 1
