"""Is a lease-tree node live: neither it nor any ancestor revoked or expired?

Revoking a node revokes its subtree in one transaction, but on PostgreSQL a
node added while its parent was being revoked can escape the subtree that
revocation collected. So a secret lease is checked against its whole line of
ancestors, read in one recursive query, every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, literal, select

from proctor.audit import WriteCursor
from proctor.store import as_utc
from proctor.store.tables import leases

__all__ = ["MAX_DEPTH", "Lineage", "lineage_in", "read_lineage"]

# Deeper than any real tree (task → grant → delegations (≤ a few) → lease); a chain
# that reaches it is treated as broken (a cycle), so not live.
MAX_DEPTH = 32

_start = select(leases.c.id, leases.c.parent_id, leases.c.task_id, leases.c.agent_id,
                leases.c.expires_at, leases.c.revoked_at, literal(0).label("depth")
                ).where(leases.c.id == bindparam("node_id")).cte("lineage", recursive=True)
_step = select(leases.c.id, leases.c.parent_id, leases.c.task_id, leases.c.agent_id,
               leases.c.expires_at, leases.c.revoked_at, (_start.c.depth + 1).label("depth")
               ).join(_start, leases.c.id == _start.c.parent_id).where(_start.c.depth < MAX_DEPTH)
_LINEAGE = select(_start.union_all(_step)).order_by("depth")
# the same query for the audit writer's transaction (:func:`lineage_in`)
_LINEAGE_SQL = (
    "WITH RECURSIVE lineage(id, parent_id, task_id, agent_id, expires_at, revoked_at, depth) "
    "AS (SELECT id, parent_id, task_id, agent_id, expires_at, revoked_at, 0 FROM leases "
    "WHERE id = {p} UNION ALL SELECT l.id, l.parent_id, l.task_id, l.agent_id, l.expires_at, "
    "l.revoked_at, lineage.depth + 1 FROM leases l JOIN lineage ON l.id = lineage.parent_id "
    "WHERE lineage.depth < {p}) "
    "SELECT id, parent_id, task_id, agent_id, expires_at, revoked_at FROM lineage "
    "ORDER BY depth")


@dataclass(frozen=True, slots=True)
class Lineage:
    """A node and its ancestors, the node first."""

    node_id: str
    task_id: str
    agent_id: str
    is_complete: bool
    revoked: bool
    expires_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        """Complete (reaches a root), nothing revoked, nothing expired at ``now``."""
        return (self.is_complete and not self.revoked
                and (self.expires_at is None or self.expires_at > now))


def read_lineage(conn: Connection, node_id: str) -> Lineage | None:
    """The line from ``node_id`` to its root, or None if there is no such node.

    ``expires_at`` is the earliest expiry along the line; ``is_complete`` is false
    when an ancestor is missing or the line is longer than :data:`MAX_DEPTH`.
    """
    rows = conn.execute(_LINEAGE, {"node_id": node_id}).all()
    return _lineage([(r.id, r.parent_id, r.task_id, r.agent_id,
                      as_utc(r.expires_at) if r.expires_at is not None else None,
                      r.revoked_at) for r in rows])


def lineage_in(tx: WriteCursor, node_id: str) -> Lineage | None:
    """:func:`read_lineage` in the audit writer's transaction (a lease made with its
    event)."""
    return _lineage([(*row[:4], tx.read_time(row[4]), row[5])
                     for row in tx.rows(_LINEAGE_SQL, [node_id, MAX_DEPTH])])


def _lineage(rows: list[tuple[Any, ...]]) -> Lineage | None:
    """The line of ``rows`` (id, parent, task, agent, expiry, revoked at; the node
    first)."""
    if not rows:
        return None
    expiries = [r[4] for r in rows if r[4] is not None]
    return Lineage(
        node_id=rows[0][0], task_id=rows[0][2], agent_id=rows[0][3],
        is_complete=rows[-1][1] is None and len(rows) <= MAX_DEPTH,
        revoked=any(r[5] is not None for r in rows),
        expires_at=min(expiries) if expiries else None,
    )
