"""Shadow mode across processes: which candidate revision is shadowed, and what it
would have decided otherwise.

The shadowed revision is a row in the store, so every server process on the
database shadows the same one (each picks a change up within its sync
interval). Each process's engine evaluates the candidate beside the active
set on every decision and keeps the differences in memory; the sync moves
them to the store, where ``GET /v1/policies/shadow`` reads them from all
processes. No arguments or context are stored: who, what, on what, and the
two answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from proctor.audit import Actor, AuditEvent, AuditLog, WriteCursor, new_event_id
from proctor.clock import Clock
from proctor.errors import ProctorError, RequestError
from proctor.oversight.audited import commit_with_event, insert_row
from proctor.policy import PolicyEngine, PolicyStore
from proctor.store import Store, as_utc
from proctor.store.tables import policy_shadow, shadow_differences

__all__ = ["Audited", "ShadowState", "ShadowStatus"]

log = logging.getLogger(__name__)

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Audited:
    """Where a human's choice is audited: the log, the actor, the source."""

    log: AuditLog
    actor: Actor
    source: str | None = None


@dataclass(slots=True)
class _Choice:
    """The shadowed revision's row, in the writer's transaction."""

    values: dict[str, Any]
    refusal: ProctorError | None = None  # none: the revision was validated before

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        tx.execute("DELETE FROM policy_shadow")
        insert_row(tx, policy_shadow, {"id": 1, **self.values})
        return None


@dataclass(frozen=True, slots=True)
class ShadowStatus:
    revision: int | None
    changed_by: str | None
    changed_at: datetime | None


class ShadowState:
    """Starts and stops shadowing, applies the stored choice, moves differences to the store."""

    def __init__(self, store: Store, engine: PolicyEngine, policies: PolicyStore,
                 clock: Clock) -> None:
        self._store = store
        self._engine = engine
        self._policies = policies
        self._clock = clock
        self._applied: int | None = None

    def status(self) -> ShadowStatus:
        with self._store.reading() as conn:
            row = conn.execute(select(policy_shadow).where(policy_shadow.c.id == 1)).first()
        if row is None:
            return ShadowStatus(None, None, None)
        return ShadowStatus(row.revision, row.changed_by, as_utc(row.changed_at))

    def start(self, revision: int, *, by: str, audited: Audited | None = None) -> ShadowStatus:
        """Shadow ``revision`` (validated first: an invalid one raises and changes nothing).
        ``audited``: the log and the actor of its ``policy.shadow`` event, written in the
        same transaction (if the log cannot be written, nothing changes)."""
        active = self._engine.active
        if active is not None and active.revision == revision:
            raise RequestError(f"policy revision `{revision}` is the active one: shadow a "
                               "candidate")
        compiled = self._policies.compile(revision)
        self._set(revision, by, audited)
        self._engine.shadow = compiled
        self._engine.shadow_differences.clear()
        self._applied = revision
        return self.status()

    def stop(self, *, by: str, audited: Audited | None = None) -> ShadowStatus:
        self.flush()
        self._set(None, by, audited)
        self._engine.shadow = None
        self._applied = None
        return self.status()

    def _set(self, revision: int | None, by: str, audited: Audited | None = None) -> None:
        now = self._clock.now()
        values: dict[str, Any] = {"revision": revision, "changed_by": by, "changed_at": now}
        if audited is not None:  # the choice and its event, in one transaction
            event = AuditEvent(
                id=new_event_id(now), time=now, actor=audited.actor, action="policy.shadow",
                target=f"PolicyRevision::{'none' if revision is None else revision}",
                outcome="stopped" if revision is None else "shadowing", source=audited.source)
            commit_with_event(audited.log, event, _Choice(values))
            return
        with self._store.transaction() as conn:
            conn.execute(delete(policy_shadow))
            conn.execute(insert(policy_shadow).values(id=1, **values))

    def sync(self) -> None:
        """Apply the stored choice to this process's engine, then store its differences."""
        wanted = self.status().revision
        if wanted != self._applied:
            self.flush()
            self._engine.shadow = self._policies.compile(wanted) if wanted is not None else None
            self._engine.shadow_differences.clear()
            self._applied = wanted
        self.flush()

    def flush(self) -> int:
        """Move this process's recorded differences to the store; returns how many."""
        pending = self._engine.shadow_differences
        rows: list[dict[str, Any]] = []
        now = self._clock.now()
        while pending and len(rows) < _BATCH * 10:
            difference = pending.popleft()
            rows.append({
                "revision": difference.candidate.revision or self._applied or 0,
                "active_revision": difference.active.revision, "recorded_at": now,
                "principal": str(difference.request.principal),
                "action": difference.request.action,
                "resource": str(difference.request.resource),
                "active_outcome": difference.active.outcome.value,
                "active_policies": list(difference.active.policy_ids),
                "candidate_outcome": difference.candidate.outcome.value,
                "candidate_policies": list(difference.candidate.policy_ids),
            })
        if rows:
            with self._store.transaction() as conn:
                for start in range(0, len(rows), _BATCH):
                    conn.execute(insert(shadow_differences), rows[start:start + _BATCH])
        return len(rows)

    def results(self, revision: int, *, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many differences ``revision`` has, and the newest ``limit`` of them."""
        t = shadow_differences.c
        with self._store.reading() as conn:
            total = conn.execute(select(func.count()).select_from(shadow_differences)
                                 .where(t.revision == revision)).scalar_one()
            rows = conn.execute(select(shadow_differences).where(t.revision == revision)
                                .order_by(t.id.desc()).limit(limit)).all()
        return int(total), [{
            "recorded_at": as_utc(r.recorded_at).isoformat(), "principal": r.principal,
            "action": r.action, "resource": r.resource,
            "active": {"revision": r.active_revision, "decision": r.active_outcome,
                       "policy_ids": list(r.active_policies)},
            "candidate": {"revision": r.revision, "decision": r.candidate_outcome,
                          "policy_ids": list(r.candidate_policies)},
        } for r in rows]
