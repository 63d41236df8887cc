"""The grants bench's revocation: a task with many grants of 1,000 nodes each, bulk-loaded
into ``leases`` next to an unrelated tree, revoked in one call; then checked: no node of
the subtree is left unrevoked, the real tokens among them check as revoked, and the
unrelated tree is untouched.

The call is timed whole: the revoking transaction, which puts the subtree out of force,
and the collection of the ids it returns; the time until the first announcement (the
roots, heard once their transaction committed: from then on every node refuses the
subtree) is kept as well, and the time until the lease tree's marker thread has marked
every descendant (``LeaseTree.settle``), for listings and notifications.
"""

from __future__ import annotations

import gc
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select, text

from grants_workload import AGENT, SCOPE, Backend
from proctor.clock import SystemClock
from proctor.errors import GrantError, StoreError
from proctor.grants import GrantAuthority, IssuedGrant
from proctor.store.tables import leases

FANOUT = (9, 10, 10)  # under each grant: 9 children, 90 grandchildren, 900 below: 1,000 nodes
GRANT_NODES = 1 + 9 + 90 + 900
REAL_GRANTS = 3  # issued through the authority, so that their tokens can be checked after
BATCH = 10_000


def build_tree(b: Backend, grants: int) -> tuple[str, list[IssuedGrant]]:
    """A task with ``grants`` grants of ``GRANT_NODES`` nodes each; returns it and its tokens."""
    authority = b.authority
    task = authority.start_task(AGENT, purpose="bench revocation",
                                on_behalf_of="alice@acme.example")
    real = [authority.issue(task.id, SCOPE) for _ in range(REAL_GRANTS)]
    now = SystemClock().now()
    expires = now + timedelta(seconds=300)
    rows: list[dict[str, Any]] = []

    def add(parents: Sequence[str], fanout: int) -> list[str]:
        children = []
        for parent in parents:
            for _ in range(fanout):
                node = f"grant_{secrets.token_hex(12)}"
                children.append(node)
                rows.append({"id": node, "parent_id": parent, "kind": "grant",
                             "task_id": task.id, "agent_id": AGENT, "created_at": now,
                             "expires_at": expires, "revoked_at": None, "revoked_reason": None})
        return children

    level = [g.grant_id for g in real] + add([task.id], grants - REAL_GRANTS)
    for fanout in FANOUT:
        level = add(level, fanout)
    with b.store.transaction() as conn:
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(leases), rows[start:start + BATCH])
    if b.store.backend == "postgresql":
        # the planner's statistics, as autovacuum keeps them on a table in service
        with b.store.transaction() as conn:
            conn.execute(text("ANALYZE leases"))
    return task.id, real


@dataclass
class Revocation:
    """What revoking on one backend gave: the times, and whether it revoked all and only
    the subtree (``error`` if a run failed)."""

    seconds: list[float] = field(default_factory=list)
    in_force_seconds: list[float] = field(default_factory=list)
    marked_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # the process's, call and marking
    call_cpu_seconds: list[float] = field(default_factory=list)  # the process's, the call
    revoked: int = 0
    all_revoked: bool = True
    others_untouched: bool = True
    error: str | None = None


def revocation(b: Backend, grants: int, repeats: int) -> Revocation:
    """Revoke ``repeats`` tasks of ``grants`` grants each, one at a time, and check each."""
    result = Revocation()
    nodes = grants * GRANT_NODES
    bystander, _ = build_tree(b, max(REAL_GRANTS, grants // 10))
    heard: list[int] = []
    b.authority.leases.subscribe(
        lambda _ids, _reason: heard.append(time.perf_counter_ns()) if not heard else None)
    for _ in range(repeats):
        task_id, real = build_tree(b, grants)
        gc.collect()
        heard.clear()
        start, cpu_at = time.perf_counter_ns(), time.process_time()
        try:
            revoked = b.authority.leases.revoke_subtree([task_id], "bench")
            returned, call_cpu = time.perf_counter_ns(), time.process_time() - cpu_at
            if not b.authority.leases.settle(timeout=600):
                raise StoreError("the descendants were not marked in 600 s")
        except StoreError as exc:
            cause = str(exc.__cause__).splitlines()[0] if exc.__cause__ else ""
            result.error = f"{exc.message}: {cause}"
            result.all_revoked = False
            break
        result.marked_seconds.append((time.perf_counter_ns() - start) / 1e9)
        result.cpu_seconds.append(time.process_time() - cpu_at)
        result.call_cpu_seconds.append(call_cpu)
        result.seconds.append((returned - start) / 1e9)
        result.in_force_seconds.append((heard[0] - start) / 1e9 if heard else float("nan"))
        result.revoked = len(revoked)
        with b.store.transaction() as conn:
            total, done = conn.execute(  # count(revoked_at) counts the revoked ones
                select(func.count(), func.count(leases.c.revoked_at))
                .where(leases.c.task_id == task_id)).one()
            touched = conn.execute(select(func.count()).where(
                leases.c.task_id == bystander, leases.c.revoked_at.is_not(None))).scalar_one()
        result.all_revoked &= total == done == nodes + 1 and all(
            _rejected(b.authority, g.token) for g in real)
        result.others_untouched &= touched == 0
    return result


def _rejected(authority: GrantAuthority, token: str) -> bool:
    try:
        authority.inspect(token)
    except GrantError as exc:
        return exc.code == "grant_revoked"
    return False
