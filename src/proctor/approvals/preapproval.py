"""Spending a pre-approval grant ("approve similar within this task") on a call."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, select, update

from proctor.clock import Clock
from proctor.grants.scope import GrantScope
from proctor.store import Store
from proctor.store.tables import approval_grants, approvals, grants, leases

__all__ = ["use_similar"]

_MAX_DEPTH = 64  # nodes from a grant up to its task: far more than any delegation depth


def _below_floor(scope: GrantScope, args: Mapping[str, Any]) -> bool:
    """Whether an integer argument pinned to "at most" the approved value is below its
    floor: zero, or the approved value itself when that was negative. A scope's ``max``
    has no lower end, and a pre-approval of refunds up to 250.00 is not one of a refund
    of -10,000.00 (a charge)."""
    for tool in scope.tools:
        for name, constraint in tool.args.items():
            if constraint.max is None or name not in args:
                continue
            floor = min(0, constraint.max)
            value = args[name]
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, int) and v < floor for v in values):
                return True
    return False


def _line_of(request: object) -> list[str] | None:
    """The delegation chain an approval request was made along (as the enforcer wrote
    it, first holder first), or None if it cannot be read."""
    if isinstance(request, str):
        request = json.loads(request)
    chain = request.get("delegation_chain", []) if isinstance(request, dict) else None
    return [str(a) for a in chain] if isinstance(chain, list) else None


def _line_up(conn: Connection, grant_id: str) -> tuple[str, ...] | None:
    """``grant_id`` and every node it derives from (the grants of its delegation line,
    its task), read up the tree, or None if any of them is revoked or missing: a revoked
    ancestor's descendants are marked after its commit, so the grant's own mark is not
    enough."""
    line: list[str] = []
    node_id: str | None = grant_id
    for _ in range(_MAX_DEPTH):
        if node_id is None:
            return tuple(line)
        row = conn.execute(select(leases.c.parent_id, leases.c.revoked_at)
                           .where(leases.c.id == node_id)).first()
        if row is None or row.revoked_at is not None:
            return None
        line.append(node_id)
        node_id = row.parent_id
    return None  # deeper than any line: a cycle, never in force


def use_similar(store: Store, clock: Clock, *, agent_id: str, task_id: str, tool_id: str,
                args: Mapping[str, Any], line: Sequence[str]
                ) -> tuple[str, str, tuple[str, ...]] | None:
    """Spend one use of a live pre-approval grant that allows this call, made along the
    delegation chain ``line`` (first holder first, ``context.delegation.chain``); returns
    the id of the approval it came from, the grant's, and the lease nodes the call's
    allow rests on (that grant and the line of the grant of the call it approved, up to
    its task), or None. Atomic: a last use goes to one call only. The call's write
    confirms those nodes are still unrevoked
    (:attr:`~proctor.grants.use.GrantUse.also_live`): a revocation of any of them
    committing between this spend and that write is honoured.

    A pre-approval stands for calls along the line of the call it approved only: its
    approver was held apart from that line's owners (separation of duties), not from
    the owners of another line the agent may be handed a grant of in the task. And it
    stands on the grant of the call it approved: once that grant, or one it derives
    from, is revoked (it leaked, its delegator was stopped), the pre-approval is spent
    no more, as it is never issued for such a grant (``SimilarApprovals._check_live``):
    that line is read here, and again by the call's write."""
    now = clock.now()
    parent = leases.alias("parent")  # its task: ending it revokes that node first
    query = (select(approval_grants.c.grant_id, approval_grants.c.approval_id,
                    approval_grants.c.arg_names, grants.c.scope, approvals.c.request,
                    approvals.c.grant_id.label("approved_grant"))
             .join(grants, grants.c.id == approval_grants.c.grant_id)
             .join(approvals, approvals.c.id == approval_grants.c.approval_id)
             .join(leases, leases.c.id == approval_grants.c.grant_id)
             .join(parent, parent.c.id == leases.c.parent_id)
             .where(and_(parent.c.revoked_at.is_(None),approval_grants.c.task_id == task_id,
                         approval_grants.c.agent_id == agent_id,
                         approval_grants.c.tool_id == tool_id,
                         leases.c.revoked_at.is_(None), leases.c.expires_at > now,
                         grants.c.uses < grants.c.max_uses))
             .order_by(approval_grants.c.created_at))
    with store.transaction() as conn:
        for row in conn.execute(query).all():
            if not set(args) <= set(row.arg_names) or _line_of(row.request) != list(line):
                continue
            scope = GrantScope.from_json(row.scope)
            if not scope.allows(tool_id, args) or _below_floor(scope, args):
                continue
            approved = _line_up(conn, str(row.approved_grant))
            if approved is None:
                continue
            spent = conn.execute(update(grants).where(and_(
                grants.c.id == row.grant_id, grants.c.uses < grants.c.max_uses))
                .values(uses=grants.c.uses + 1)).rowcount
            if spent == 1:
                grant_id = str(row.grant_id)
                return str(row.approval_id), grant_id, (grant_id, *approved)
    return None

