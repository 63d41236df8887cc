"""Reads the console needs that the domain parts do not offer as such: recent tasks,
and a task's lease tree with each grant's accessor, scope and uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select

from proctor.approvals import SimilarGrant
from proctor.grants import LeaseNode, Task, in_force
from proctor.store import Store, as_utc
from proctor.store.tables import approvals, grants, leases, tasks

__all__ = ["TreeNode", "pending_count", "recent_tasks", "task_tree"]


def recent_tasks(store: Store, *, limit: int = 50) -> list[tuple[Task, int]]:
    """The newest tasks, each with how many of its grants are live: in force, as the
    checks decide (none under an ended task or a revoked grant, marked yet or not)."""
    with store.reading() as conn:
        rows = conn.execute(select(tasks).order_by(tasks.c.started_at.desc())
                            .limit(limit)).all()
        in_them = in_force(leases.c.id.in_([r.id for r in rows]))
        live = {task: int(count) for task, count in conn.execute(
            select(leases.c.task_id, func.count())
            .where(and_(leases.c.kind == "grant", leases.c.id.in_(select(in_them.c.id))))
            .group_by(leases.c.task_id))} if rows else {}
    return [(Task(r.id, r.agent_id, r.purpose, r.on_behalf_of, as_utc(r.started_at),
                  as_utc(r.ended_at) if r.ended_at else None, int(r.sensitivity_seen)),
             int(live.get(r.id, 0))) for r in rows]


def pending_count(store: Store, now: datetime) -> int:
    with store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(approvals).where(and_(
            approvals.c.status == "pending", approvals.c.expires_at > now))).scalar_one())


@dataclass
class TreeNode:
    """A lease node as the tree shows it, with its children and what revoking it takes."""

    node: LeaseNode
    depth: int
    accessor: str = ""
    scope: dict[str, Any] | None = None
    max_uses: int | None = None
    uses: int = 0
    similar: SimilarGrant | None = None
    children: list[TreeNode] = field(default_factory=list)

    @property
    def live_below(self) -> int:
        """Live descendants: what revoking this node also revokes."""
        return sum((not c.node.is_revoked) + c.live_below for c in self.children)

    def is_expired(self, now: datetime) -> bool:
        return self.node.expires_at is not None and self.node.expires_at <= now


def task_tree(store: Store, nodes: list[LeaseNode], similar: list[SimilarGrant]
              ) -> list[TreeNode]:
    """``nodes`` (parents first) as rows in display order, each knowing its children."""
    ids = [n.id for n in nodes if n.kind == "grant"]
    details: dict[str, Any] = {}
    if ids:
        with store.reading() as conn:
            details = {r.id: r for r in conn.execute(select(
                grants.c.id, grants.c.accessor, grants.c.scope, grants.c.max_uses,
                grants.c.uses).where(grants.c.id.in_(ids))).all()}
    by_similar = {s.grant_id: s for s in similar}
    made: dict[str, TreeNode] = {}
    roots: list[TreeNode] = []
    for node in nodes:
        row = details.get(node.id)
        parent = made.get(node.parent_id or "")
        item = TreeNode(node, parent.depth + 1 if parent else 0,
                        accessor=row.accessor if row else "",
                        scope=row.scope if row else None,
                        max_uses=row.max_uses if row else None, uses=row.uses if row else 0,
                        similar=by_similar.get(node.id))
        made[node.id] = item
        (parent.children if parent else roots).append(item)
    ordered: list[TreeNode] = []
    stack = list(reversed(roots))
    while stack:
        item = stack.pop()
        ordered.append(item)
        stack.extend(reversed(item.children))
    return ordered
