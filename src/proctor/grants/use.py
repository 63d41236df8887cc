"""One use of a grant, written as the effects of the decision that uses it.

A tool call's decision writes its audit event and the grant's use in one
transaction, the audit writer's (:meth:`~proctor.audit.AuditLog.record_with`), shared
by every decision that is waiting: one commit per batch. :class:`GrantUse` is that
use. In the transaction, in this order, each failure a :class:`GrantError`:

1. the agent is active;
2. nothing in the grant's lineage (itself, its ancestors, its task) is revoked;
3. the task is open: not ended, not past its lifetime or idle timeout;
4. the proof's nonce is new (``INSERT … ON CONFLICT DO NOTHING``: single use across
   processes);
5. a use is left (``UPDATE … SET uses = uses + 1 WHERE uses < max_uses``: exact under
   races);
6. the task's activity, and the highest data sensitivity an allowed call read in it.

Steps 1-3 read what the transaction sees *now*: on SQLite the writer holds the
database's one write lock, on PostgreSQL the rows are read ``FOR SHARE`` (the task
``FOR UPDATE``), so a suspension, a task's end or a revocation that committed first
is seen, and one still running is waited for. No decision is allowed on what was
revoked before its own write committed. The locks are taken in the order a
suspension (the agent, then its grants' nodes) and ending a task (the task, then
its nodes) take theirs, so they cannot deadlock with them.

A failed check changes nothing: the use's own earlier writes are undone, and the
decision's event is replaced by its refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from proctor.audit import AuditEvent, WriteCursor
from proctor.errors import GrantError
from proctor.grants.tokens import GrantClaims
from proctor.identity.agent import ACTIVE_STATES

__all__ = ["IDLE_PRECISION_SECONDS", "GrantUse", "any_revoked"]

# A task's idle deadline moves at most once a second: a burst of calls writes it once.
IDLE_PRECISION_SECONDS = 1

_TASK = ("SELECT ended_at, expires_at, idle_seconds, idle_until, sensitivity_seen "
         "FROM tasks WHERE id = {p}")
_NONCE = "INSERT INTO proof_nonces (nonce, expires_at) VALUES ({p}, {p}) ON CONFLICT DO NOTHING"
_FORGET_NONCE = "DELETE FROM proof_nonces WHERE nonce = {p}"
_USE = ("UPDATE grants SET uses = uses + 1 WHERE id = {p} "
        "AND (max_uses IS NULL OR uses < max_uses) RETURNING max_uses, uses, accessor")
_GRANT = "SELECT accessor FROM grants WHERE id = {p}"
_TOUCH = "UPDATE tasks SET idle_until = {p}, sensitivity_seen = {p} WHERE id = {p}"


def _leases(count: int) -> str:
    marks = ", ".join(["{p}"] * count)
    return f"SELECT id, revoked_at FROM leases WHERE id IN ({marks})"  # noqa: S608


def any_revoked(tx: WriteCursor, ids: Iterable[str]) -> bool:
    """Whether any of the lease nodes ``ids`` is revoked or missing, as ``tx`` sees it
    now (``FOR SHARE`` on PostgreSQL: a revocation running is waited for, then seen)."""
    wanted = list(dict.fromkeys(ids))
    live = {row[0] for row in tx.rows(_leases(len(wanted)) + tx.for_share, wanted)
            if row[1] is None}
    return any(i not in live for i in wanted)


AgentState = Callable[[WriteCursor, str], str | None]
"""The agent's trust state as the transaction sees it (None: unknown)."""

Refusal = Callable[[GrantError], AuditEvent | None]
"""The event to write instead of the decision's when the use is refused."""


@dataclass(slots=True)
class GrantUse:
    """The effects of one use of a grant (see the module docstring).

    ``claims.lineage`` is what must not be revoked; ``nonce`` (with the time it is kept
    until) the proof's; ``counts`` whether a use is counted (a tool call) or the
    grant only shown (an exchange, an API call); ``sensitivity`` the data label
    rank the call reads, set by the caller once policy allowed it. After the
    write, ``refusal`` is the check that failed, or None; ``uses_left`` and
    ``accessor`` are known when a use was counted.
    """

    claims: GrantClaims
    agent_state: AgentState
    now: datetime
    nonce: str | None
    nonce_until: datetime | None
    counts: bool
    refuse: Refusal = field(default=lambda _exc: None)
    sensitivity: int = 0
    refusal: GrantError | None = None
    uses_left: int | None = None
    accessor: str | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        """The :class:`~proctor.audit.Effects` of the use; never raises a refusal."""
        self.refusal = None
        self.uses_left = self.accessor = None
        try:
            self._apply(tx)
        except GrantError as exc:
            self.refusal = exc
            return self.refuse(exc)
        return None

    def _apply(self, tx: WriteCursor) -> None:
        claims = self.claims
        agent = self.agent_state(tx, claims.agent_id)
        task = tx.rows(_TASK + ("" if tx.is_sqlite else " FOR UPDATE"), [claims.task_id])
        revoked = any_revoked(tx, claims.lineage)
        # read in the order of the locks; refused in the order of the checks
        if agent is None:
            raise GrantError("agent_unknown", "the grant's agent is not registered")
        if agent not in ACTIVE_STATES:
            raise GrantError("agent_not_active", f"agent is {agent}")
        if revoked:
            raise GrantError("grant_revoked", "the grant or one it derives from is revoked")
        if not task:
            raise GrantError("task_unknown", f"task `{claims.task_id}` does not exist")
        ended_at, expires_at, idle_seconds, idle_until, seen = task[0]
        idle_until = tx.read_time(idle_until)
        self._check_open(tx.read_time(ended_at), tx.read_time(expires_at), idle_seconds,
                         idle_until)
        if self.nonce is not None:
            assert self.nonce_until is not None
            if tx.execute(_NONCE, [self.nonce, tx.time(self.nonce_until)]) != 1:
                raise GrantError("proof_replayed", "this proof was already used")
        if self.counts:
            self._count(tx)
        self._touch(tx, idle_seconds, idle_until, int(seen))

    def _check_open(self, ended_at: datetime | None, expires_at: datetime | None,
                    idle_seconds: int | None, idle_until: datetime | None) -> None:
        if ended_at is not None:
            raise GrantError("task_ended", f"task `{self.claims.task_id}` has ended")
        if expires_at is not None and self.now >= expires_at:
            raise GrantError("task_expired", f"task `{self.claims.task_id}` reached its maximum "
                             "lifetime")
        if idle_until is not None and self.now >= idle_until:
            raise GrantError("task_idle", f"task `{self.claims.task_id}` ended after "
                             f"{idle_seconds} seconds without a call")

    def _count(self, tx: WriteCursor) -> None:
        used = tx.rows(_USE, [self.claims.grant_id])
        if not used:
            known = tx.rows(_GRANT, [self.claims.grant_id])
            if self.nonce is not None:  # a refused use changes nothing
                tx.execute(_FORGET_NONCE, [self.nonce])
            if not known:
                raise GrantError("grant_unknown", "the grant is not known to this issuer")
            raise GrantError("grant_uses_exhausted", "the grant has no uses left")
        max_uses, uses, accessor = used[0]
        self.accessor = str(accessor)
        self.uses_left = None if max_uses is None else int(max_uses) - int(uses)

    def _touch(self, tx: WriteCursor, idle_seconds: int | None, idle_until: datetime | None,
               seen: int) -> None:
        until = idle_until
        if idle_seconds is not None:
            moved = self.now + timedelta(seconds=idle_seconds)
            if until is None or moved - until >= timedelta(seconds=IDLE_PRECISION_SECONDS):
                until = moved
        if until == idle_until and self.sensitivity <= seen:
            return
        tx.execute(_TOUCH, [None if until is None else tx.time(until),
                            max(seen, self.sensitivity), self.claims.task_id])
