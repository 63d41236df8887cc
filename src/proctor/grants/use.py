"""One use of a grant, written as the effects of the decision that uses it.

A tool call's decision writes its audit event and the grant's use in one
transaction, the audit writer's (:meth:`~proctor.audit.AuditLog.record_with`), shared
by every decision that is waiting: one commit per batch. :class:`GrantUse` is that
use. In the transaction, in this order, each failure a :class:`GrantError`:

1. the agent is active, still holds the grant's key and (trusted) runs the manifest the
   grant was issued for (the grant check's :func:`~proctor.grants.agents.binding_refusal`,
   asked again of the row: the check itself may have read a view that had not heard of a
   change yet) and, for an allow, is in the trust state the decision saw, its risk no
   higher than the decision saw: score and named factors, what policy forbids on (a
   drift, or a higher score, committed by another process whose news had not reached
   this one: ``agent_changed``); a delegated grant's line (every agent of its ``act``
   chain) is trusted and active, at a risk below ``max_risk``, and runs the manifest its
   own grant was issued under (``grant_manifest_changed``)
   (:func:`~proctor.grants.agents.line_refusal`:
   ``delegator_not_trusted``; one row each, read once per transaction, and none for
   a grant of depth 0);
2. nothing in the grant's lineage (itself, its ancestors, its task) is revoked, nor,
   for a call allowed on a pre-approval, that pre-approval or the line of the grant of
   the call it approved (:attr:`GrantUse.also_live`);
3. the task is open: not ended, not past its lifetime or idle timeout; for an allow,
   its data sensitivity seen is no higher than the decision saw (a confidential read
   committed by another process: ``task_changed``), and the policy revision it was
   decided on is still the active one (another process activated a new one, which
   this one loads every ``sync_seconds``: ``policy_changed``), and a pinned tool's
   reviewed digest (a gateway's ``pin: strict``) still the digest of the definition
   the call is made against (``tool_changed``, ``tool_unreviewed``; read with the
   lease nodes);
4. the proof's nonce is new (``INSERT … ON CONFLICT DO NOTHING``: single use across
   processes);
5. a use is left (``UPDATE … SET uses = uses + 1 WHERE uses < max_uses``: exact under
   races). A grant issued without ``max_uses`` has nothing to count: when the use knows
   that before the write (:attr:`GrantUse.limit`, read once per grant: it never changes)
   no statement is run for it, and its ``uses`` stays as it was;
6. the task's activity, and the highest data sensitivity an allowed call read in it.

An allow refused ``agent_changed`` or ``task_changed`` was decided on a view this
process held before the news of another's commit reached it (PostgreSQL: its
``NOTIFY`` is on the way); the enforcer decides it once more on the rows as they are.
The comparisons are on the rows steps 1-3 read anyway: no statement is added.

Steps 1-3 read what the transaction sees *now*: on SQLite the writer holds the
database's one write lock, on PostgreSQL the rows are read ``FOR SHARE`` (the task
``FOR UPDATE``), so a suspension, a task's end or a revocation that committed first
is seen, and one still running is waited for. No decision is allowed on what was
revoked before its own write committed. The locks are taken in the order a
suspension (the agent, then its grants' nodes) and ending a task (the task, then
its nodes) take theirs, so they cannot deadlock with them.

The uses of one batch are written together (:meth:`GrantUse.apply_all`): each step
is one statement for the whole batch, not one per use (on PostgreSQL each statement
is a round trip; on SQLite steps 1-3 read the agents, the tasks, the lease nodes and
the pins by one statement), and the uses are judged in the batch's order: of two uses of one
nonce the first stands, of two uses of a grant with one use left the first gets it.
A task's idle deadline moves with the uses of the batch that passed steps 1-3.

A failed check changes nothing: the use's own earlier writes are undone, and the
decision's event is replaced by its refusal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from proctor.audit import AuditEvent, WriteCursor
from proctor.errors import AgentError, GrantError
from proctor.grants.agents import AgentBinding, binding_refusal, line_refusal
from proctor.grants.directory import BINDING_COLUMNS, binding_of_row
from proctor.grants.tokens import GrantClaims

__all__ = ["IDLE_PRECISION_SECONDS", "GrantUse", "Risk", "active_revision", "any_revoked",
           "riskier"]

# A task's idle deadline moves at most once a second: a burst of calls writes it once.
IDLE_PRECISION_SECONDS = 1

_NONCES = "INSERT INTO proof_nonces (nonce, expires_at) VALUES {rows} ON CONFLICT DO NOTHING " \
    "RETURNING nonce"
# one use each of grants named once in the batch: exact under races, one statement
_USE_ONE = ("UPDATE grants SET uses = uses + 1 WHERE id IN ({ids}) "
            "AND (max_uses IS NULL OR uses < max_uses) RETURNING id, max_uses, uses, accessor")
# grants named more than once: read locked, then counted
_GRANTS = "SELECT id, max_uses, uses, accessor FROM grants WHERE id IN ({ids})"
_ADD_USES = "UPDATE grants SET uses = uses + {p} WHERE id = {p}"
_KNOWN = "SELECT id FROM grants WHERE id IN ({ids})"
_FORGET_NONCES = "DELETE FROM proof_nonces WHERE nonce IN ({ids})"
# the active policy revision, which an allow confirms: read with the tasks (a call's
# write) or the lease nodes (a grant's), no statement of its own
_ACTIVE_REVISION = ("(SELECT r.id FROM policy_revisions r WHERE r.status = 'active' "
                    "ORDER BY r.id DESC LIMIT 1)")
_TASKS = ("SELECT id, ended_at, expires_at, idle_seconds, idle_until, sensitivity_seen, "  # noqa: S608
          + _ACTIVE_REVISION + " AS active_revision FROM tasks WHERE id IN ({ids})")
_TOUCH = "UPDATE tasks SET idle_until = {p}, sensitivity_seen = {p} WHERE id = {p}"


def _marks(count: int) -> str:
    return ", ".join(["{p}"] * count)


# a pinned tool's pin as the write sees it, ``reviewed digest:change`` (NULL: no row)
_PIN = ("(SELECT COALESCE(reviewed_digest, '') || ':' || COALESCE(pin_change, '') "
        "FROM tool_catalog WHERE tool_id = {p})")


def _leases(count: int, *, revision: bool = False, pins: int = 0) -> str:
    also = (f", {_ACTIVE_REVISION}" if revision else "") + f", {_PIN}" * pins
    return f"SELECT id, revoked_at{also} FROM leases WHERE id IN ({_marks(count)})"  # noqa: S608


_REVISION = ("policy", "active")  # tx.confirmed's key of the active revision


def any_revoked(tx: WriteCursor, ids: Iterable[str], *, revision: bool = False) -> bool:
    """Whether any of the lease nodes ``ids`` is revoked or missing, as ``tx`` sees it
    now (``FOR SHARE`` on PostgreSQL: a revocation running is waited for, then seen).
    ``revision``: the same statement reads the active policy revision, for
    :func:`active_revision`.

    A node found live stays so until ``tx`` ends (SQLite: the writer holds the write
    lock; PostgreSQL: the row's share lock; no effect revokes): it is noted in
    ``tx.confirmed``, and the batch's next grant under the same line reads only what
    it has not confirmed yet."""
    confirmed = tx.confirmed
    wanted = [i for i in dict.fromkeys(ids) if ("lease", i) not in confirmed]
    if not wanted:
        return False
    live = _live(tx, wanted, revision=revision and _REVISION not in confirmed)
    for node in live:
        confirmed["lease", node] = True
    return any(i not in live for i in wanted)


def active_revision(tx: WriteCursor) -> int | None:
    """The policy revision active as ``tx`` sees it (None: none is), read once per
    transaction: with the lease nodes (:func:`any_revoked` ``revision=True``), else
    by a statement of its own."""
    confirmed = tx.confirmed
    if _REVISION not in confirmed:
        rows = tx.rows("SELECT " + _ACTIVE_REVISION, [])
        confirmed[_REVISION] = rows[0][0] if rows else None
    active = confirmed[_REVISION]
    return None if active is None else int(cast(int, active))


def _live(tx: WriteCursor, wanted: list[str], *, revision: bool = False) -> set[str]:
    rows = tx.rows(_leases(len(wanted), revision=revision) + tx.for_share, wanted)
    if revision and rows:  # the same scalar on every row
        tx.confirmed[_REVISION] = rows[0][2]
    return {row[0] for row in rows if row[1] is None}


AgentState = Callable[[WriteCursor, str], str | None]
"""The agent's trust state as the transaction sees it (None: unknown)."""

AgentRead = Callable[[WriteCursor, str], AgentBinding | None]
"""The agent's key, trust state and manifest as the transaction sees it (None: unknown)."""

Risk = tuple[int, tuple[str, ...]]
"""An agent's risk score and the factors it names (``principal.risk_score``,
``principal.risk_factors``)."""

Refusal = Callable[[GrantError], AuditEvent | None]
"""The event to write instead of the decision's when the use is refused."""


@dataclass(slots=True)
class GrantUse:
    """The effects of one use of a grant (see the module docstring).

    ``claims.lineage`` is what must not be revoked; ``nonce`` (with the time it is kept
    until) the proof's; ``counts`` whether a use is counted (a tool call) or the
    grant only shown (an exchange, an API call); ``sensitivity`` the data label
    rank the call reads, set by the caller once policy allowed it; ``decided_state``,
    ``decided_risk`` and ``decided_seen`` the agent's trust state, its risk and the
    task's data sensitivity seen that an allow was decided on, which the write
    confirms, with ``decided_revision`` the policy revision and ``pinned`` the tool
    and the digest of its definition in hand, which must be its reviewed digest (a
    gateway's ``pin: strict``); ``limit`` the grant's ``max_uses`` and accessor when
    known before the write (None: read there). After the
    write, ``refusal`` is the check that failed, or None; ``uses_left`` and
    ``accessor`` are known when a use was counted; ``raised`` says the use raised its
    task's data sensitivity (a view of the task this process holds is out of date).
    """

    claims: GrantClaims
    agent: AgentRead
    now: datetime
    nonce: str | None
    nonce_until: datetime | None
    counts: bool
    refuse: Refusal = field(default=lambda _exc: None)
    sensitivity: int = 0
    decided_state: str | None = None
    decided_risk: Risk | None = None
    decided_seen: int | None = None
    decided_revision: int | None = None
    # other nodes the allow rests on: a pre-approval's, and its approved call's line
    also_live: tuple[str, ...] = ()
    pinned: tuple[str, str] | None = None  # the allowed call's tool, the digest in hand
    refusal: GrantError | None = None
    uses_left: int | None = None
    accessor: str | None = None
    raised: bool = False
    limit: tuple[int | None, str] | None = None  # max_uses and accessor: they never change
    held: bool = False  # no proof: the grant's key is held by the deciding process
    # the line's agents' risk: each below it; required, never a default
    max_risk: int = field(kw_only=True)
    # the arguments the grant's scope constrains for the call, as its check found them
    # (the policy context's ``grant.constrained``); nothing the write reads
    constrained: frozenset[str] = frozenset()

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        """The :class:`~proctor.audit.Effects` of the use; never raises a refusal."""
        return GrantUse.apply_all(tx, [self])[0]

    @classmethod
    def apply_all(cls, tx: WriteCursor, uses: Sequence[GrantUse]) -> list[AuditEvent | None]:
        """The effects of ``uses`` (a batch, in its order), each statement once for all;
        for each use, None or the event of its refusal. Never raises a refusal."""
        for use in uses:
            use.refusal = None
            use.uses_left = use.accessor = None
            use.raised = False
        tasks = _Tasks.read(tx, uses)
        passed = [use for use in uses if use._checked(tasks)]
        _claim_nonces(tx, passed)
        _count_uses(tx, [u for u in passed if u.refusal is None and u.counts])
        for use in passed:
            if use.refusal is None:
                task = tasks.found[use.claims.task_id]
                use.raised = use.sensitivity > task.seen
                task.touch(use.now, use.sensitivity)
        tasks.write(tx)
        return [None if use.refusal is None else use.refuse(use.refusal) for use in uses]

    def _checked(self, tasks: _Tasks) -> bool:
        """Steps 1-3 on what the batch read (a use that passes them keeps the task from
        idling for the next ones)."""
        try:
            claims = self.claims
            binding = tasks.agents.get(claims.agent_id)
            if binding is None:
                raise AgentError("agent_unknown", "the grant's agent is not registered")
            agent = binding.trust_state
            if not binding.is_active:
                raise AgentError("agent_not_active", f"agent is {agent}")
            refusal = binding_refusal(binding, claims.key_thumbprint, claims.manifest_digest)
            if refusal is not None:
                raise refusal
            if self.decided_state is not None and agent != self.decided_state:
                raise GrantError("agent_changed", f"agent is {agent} now, not "
                                 f"{self.decided_state} as the call was decided: ask again")
            if self.decided_risk is not None and riskier(binding, self.decided_risk):
                raise GrantError("agent_changed", "the agent's risk rose since the call was "
                                 "decided: ask again")
            if claims.actor_chain:  # delegated: the agents it derives from, as committed
                refusal = line_refusal(tasks.agents.get, claims.actor_chain,
                                       claims.line_manifests, max_risk=self.max_risk)
                if refusal is not None:
                    raise refusal
            if any(i not in tasks.live for i in claims.lineage):
                raise GrantError("grant_revoked", "the grant or one it derives from is revoked")
            if any(i not in tasks.live for i in self.also_live):
                raise GrantError("grant_revoked", "the pre-approval this call was allowed "
                                 "on, or the grant of the call it approved (or one it "
                                 "derives from), is revoked")
            task = tasks.found.get(claims.task_id)
            if task is None:
                raise GrantError("task_unknown", f"task `{claims.task_id}` does not exist")
            self._check_open(task.ended_at, task.expires_at, task.idle_seconds,
                             task.checked_until)
            if self.decided_revision is not None and task.revision != self.decided_revision:
                # none active now is not the revision decided on either: refused
                raise GrantError("policy_changed", f"policy revision {task.revision} is "
                                 f"active now, not {self.decided_revision} as the call was "
                                 "decided: ask again")
            if self.pinned is not None:
                _check_pin(*self.pinned, tasks.pins.get(self.pinned[0]))
            if self.decided_seen is not None and task.was[1] > self.decided_seen:
                raise GrantError("task_changed", f"task `{claims.task_id}` read more sensitive "
                                 "data since the call was decided: ask again")
        except GrantError as exc:
            self.refusal = exc
            return False
        task.checked_until = task.moved(task.checked_until, self.now)
        return True

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


def _check_pin(tool_id: str, digest: str, pin: str | None) -> None:
    """A pinned tool's call is allowed only on the definition a human reviewed, by its
    digest: a human may have reviewed another definition since this session listed
    it, and what another session's listing made of the pin's state does not count."""
    reviewed, _, change = (pin or ":").partition(":")
    if reviewed and reviewed == digest:
        return
    if reviewed or change in ("changed", "renamed"):
        raise GrantError("tool_changed", f"the definition of tool `{tool_id}` changed since "
                         "it was reviewed (found by another session or process); a human "
                         "must review it (proctor tool review)")
    raise GrantError("tool_unreviewed", f"tool `{tool_id}` is not reviewed; a human must "
                     "review it (proctor tool review)")


def riskier(committed: AgentBinding, decided: Risk) -> bool:
    """Whether the agent's committed risk is more than an allow was decided on: a higher
    score, or a factor named that was not. Policy forbids on risk (``principal.risk_score
    >= 80``, a factor ``in principal.risk_factors``): a lower score or fewer factors
    allow no more than the decision did, and a score fading as the agent warms up
    refuses nothing. A call's write and a grant's (``grant:issue``) both ask it."""
    return committed.risk_score > decided[0] \
        or not set(committed.risk_factors) <= set(decided[1])


@dataclass(slots=True)
class _TaskRow:
    """A task as the batch read it; its activity moved by the uses that were written
    (``checked_until``: by the uses that passed steps 1-3, for the next one's check)."""

    ended_at: datetime | None
    expires_at: datetime | None
    idle_seconds: int | None
    idle_until: datetime | None
    seen: int
    was: tuple[datetime | None, int]
    checked_until: datetime | None
    revision: int | None  # the active policy revision (None: none is active)

    def moved(self, until: datetime | None, now: datetime) -> datetime | None:
        """The idle deadline ``until`` after a call at ``now``."""
        if self.idle_seconds is None:
            return until
        moved = now + timedelta(seconds=self.idle_seconds)
        if until is None or moved - until >= timedelta(seconds=IDLE_PRECISION_SECONDS):
            return moved
        return until

    def touch(self, now: datetime, sensitivity: int) -> None:
        self.idle_until = self.moved(self.idle_until, now)
        self.seen = max(self.seen, sensitivity)


@dataclass(slots=True)
class _Tasks:
    """What steps 1-3 read for a batch: agents, tasks and the live lease nodes. On
    PostgreSQL each in one statement, in the order of the locks (agents, tasks,
    leases); on SQLite all of them by one statement (:func:`_read_at_once`: the writer
    holds the database's write lock, and takes no row locks)."""

    agents: dict[str, AgentBinding]
    found: dict[str, _TaskRow]
    live: set[str]
    pins: dict[str, str | None]  # a pinned tool's ``reviewed digest:change`` (None: no row)

    @classmethod
    def read(cls, tx: WriteCursor, uses: Sequence[GrantUse]) -> _Tasks:
        task_ids = list(dict.fromkeys(u.claims.task_id for u in uses))
        lineage = list(dict.fromkeys(i for u in uses for i in (*u.claims.lineage,
                                                                *u.also_live)))
        # with the lines, the pins of the batch's pinned tools (one scalar each)
        pinned = list(dict.fromkeys(u.pinned[0] for u in uses if u.pinned is not None))
        if tx.is_sqlite:  # one statement; the agents' rows noted for ``use.agent``
            task_rows, live, pins = _read_at_once(tx, uses, task_ids, lineage, pinned)
        agents: dict[str, AgentBinding] = {}
        for use in uses:  # one agent in most batches
            agent_id = use.claims.agent_id
            if agent_id not in agents:
                binding = use.agent(tx, agent_id)
                if binding is not None:
                    agents[agent_id] = binding
            if use.claims.actor_chain:  # a delegated grant's line (depth 0: nothing)
                for agent_id in use.claims.actor_chain:
                    if agent_id not in agents:
                        binding = use.agent(tx, agent_id)
                        if binding is not None:
                            agents[agent_id] = binding
        if not tx.is_sqlite:  # PostgreSQL: after the agents, in the order of the locks
            task_rows = tx.rows(_TASKS.format(ids=_marks(len(task_ids)))
                                + " ORDER BY id FOR UPDATE", task_ids)
            lines = tx.rows(_leases(len(lineage), pins=len(pinned)) + tx.for_share,
                            [*pinned, *lineage])
            pins = dict(zip(pinned, lines[0][2:], strict=True)) if lines and pinned else {}
            live = {row[0] for row in lines if row[1] is None}
        found = {}
        for task_id, ended_at, expires_at, idle_seconds, idle_until, seen, active in task_rows:
            until = tx.read_time(idle_until)
            found[str(task_id)] = _TaskRow(tx.read_time(ended_at), tx.read_time(expires_at),
                                           idle_seconds, until, int(seen), (until, int(seen)),
                                           until, None if active is None else int(active))
        return cls(agents, found, live, pins)

    def write(self, tx: WriteCursor) -> None:
        """The tasks whose idle deadline or data sensitivity moved, one statement each."""
        for task_id, task in self.found.items():
            if (task.idle_until, task.seen) != task.was:
                tx.execute(_TOUCH, [None if task.idle_until is None
                                    else tx.time(task.idle_until), task.seen, task_id])


# SQLite: what steps 1-3 read for a batch, by one statement (the writer holds the
# database's write lock, so one statement sees what three would): each row tagged with
# what it is, padded to the tasks' eight columns. The agents not read yet in this
# transaction (``binding_in``'s columns), the tasks, the lease nodes, the pinned tools'
# pins (a row each that exists; none: no row, as the scalar reads NULL)
_AT_ONCE_AGENTS = "SELECT 'a', " + BINDING_COLUMNS + ", NULL FROM agents WHERE id IN ({ids})"  # noqa: S608
_AT_ONCE_TASKS = "SELECT 't', " + _TASKS.removeprefix("SELECT ")
_AT_ONCE_LEASES = ("SELECT 'l', id, revoked_at, NULL, NULL, NULL, NULL, NULL FROM leases "
                   "WHERE id IN ({ids})")
_AT_ONCE_PINS = ("SELECT 'p', tool_id, COALESCE(reviewed_digest, '') || ':' || "
                 "COALESCE(pin_change, ''), NULL, NULL, NULL, NULL, NULL FROM tool_catalog "
                 "WHERE tool_id IN ({ids})")


@functools.lru_cache(maxsize=256)
def _at_once(agents: int, tasks: int, lines: int, pins: int) -> str:
    parts = [part.format(ids=_marks(count)) for part, count in (
        (_AT_ONCE_AGENTS, agents), (_AT_ONCE_TASKS, tasks), (_AT_ONCE_LEASES, lines),
        (_AT_ONCE_PINS, pins)) if count]
    return " UNION ALL ".join(parts)


def _read_at_once(tx: WriteCursor, uses: Sequence[GrantUse], task_ids: list[str],
                  lineage: list[str], pinned: list[str],
                  ) -> tuple[list[tuple[Any, ...]], set[str], dict[str, str | None]]:
    """SQLite: the batch's agents, tasks, lease nodes and pins by one statement
    (:data:`_AT_ONCE_AGENTS`); the agents go to ``tx.confirmed`` as
    :meth:`~proctor.grants.directory.RegisteredAgents.binding_in` reads them (its
    once-per-transaction memo, which it then answers from), the rest is returned: the
    tasks' rows, the live nodes, the pins."""
    confirmed = tx.confirmed
    agent_ids = [a for a in dict.fromkeys(i for u in uses for i in (u.claims.agent_id,
                                                                    *u.claims.actor_chain))
                 if ("agent", a) not in confirmed]
    rows = tx.rows(_at_once(len(agent_ids), len(task_ids), len(lineage), len(pinned)),
                   [*agent_ids, *task_ids, *lineage, *pinned])
    task_rows: list[tuple[Any, ...]] = []
    live: set[str] = set()
    pins: dict[str, str | None] = {}
    for row in rows:
        kind = row[0]
        if kind == "t":
            task_rows.append(row[1:])
        elif kind == "l":
            if row[2] is None:
                live.add(row[1])
        elif kind == "a":
            confirmed["agent", row[1]] = binding_of_row(row[1:7])
        else:
            pins[row[1]] = row[2]
    for agent_id in agent_ids:  # not found: unknown, as binding_in notes it
        confirmed.setdefault(("agent", agent_id), None)
    return task_rows, live, pins


def _claim_nonces(tx: WriteCursor, uses: Sequence[GrantUse]) -> None:
    """Step 4 for the uses that passed 1-3: one INSERT of every nonce; a nonce stored
    before, or twice in the batch (the first stands), is a replay."""
    claiming: dict[str, GrantUse] = {}
    for use in uses:
        nonce = use.nonce
        if nonce is None:
            continue
        if nonce in claiming:
            use.refusal = _replayed()
        else:
            claiming[nonce] = use
    if not claiming:
        return
    values: list[object] = []
    for nonce, use in claiming.items():
        assert use.nonce_until is not None
        values += [nonce, tx.time(use.nonce_until)]
    rows = _NONCES.format(rows=", ".join(["({p}, {p})"] * len(claiming)))
    stored = {row[0] for row in tx.rows(rows, values)}
    for nonce, use in claiming.items():
        if nonce not in stored:
            use.refusal = _replayed()


def _replayed() -> GrantError:
    return GrantError("proof_replayed", "this proof was already used")


def _count_uses(tx: WriteCursor, uses: Sequence[GrantUse]) -> None:
    """Step 5, in the batch's order; a use refused here takes its nonce back. A use of a
    grant known to have no ``max_uses`` is not counted: no statement."""
    by_grant: dict[str, list[GrantUse]] = {}
    for use in uses:
        limit = use.limit
        if limit is not None and limit[0] is None:
            use.accessor = limit[1]  # uses_left None: no limit
        else:
            by_grant.setdefault(use.claims.grant_id, []).append(use)
    if not by_grant:
        return
    once = [g for g, found in by_grant.items() if len(found) == 1]
    counted: dict[str, tuple[int | None, int, str]] = {}  # max_uses, uses before, accessor
    if once:
        for grant_id, max_uses, used, accessor in tx.rows(
                _USE_ONE.format(ids=_marks(len(once))), once):
            counted[str(grant_id)] = (max_uses, int(used) - 1, str(accessor))
    many = [g for g, found in by_grant.items() if len(found) > 1]
    if many:
        for grant_id, max_uses, used, accessor in tx.rows(
                _GRANTS.format(ids=_marks(len(many)))
                + ("" if tx.is_sqlite else " ORDER BY id FOR UPDATE"), many):
            counted[str(grant_id)] = (max_uses, int(used), str(accessor))
    added: list[tuple[int, str]] = []
    refused: list[GrantUse] = []
    for grant_id, found in by_grant.items():
        if grant_id not in counted:
            refused += found
            continue
        max_uses, before, accessor = counted[grant_id]
        left = None if max_uses is None else int(max_uses) - before
        given = 0
        for use in found:
            if left is not None and left <= given:
                refused.append(use)
                continue
            given += 1
            use.accessor = accessor
            use.uses_left = None if left is None else left - given
        if grant_id in many and given:
            added.append((given, grant_id))
    for given, grant_id in added:
        tx.execute(_ADD_USES, [given, grant_id])
    if refused:
        _refuse_uses(tx, refused)


def _refuse_uses(tx: WriteCursor, refused: Sequence[GrantUse]) -> None:
    grant_ids = list(dict.fromkeys(u.claims.grant_id for u in refused))
    known = {row[0] for row in tx.rows(_KNOWN.format(ids=_marks(len(grant_ids))), grant_ids)}
    for use in refused:
        if use.claims.grant_id in known:
            use.refusal = GrantError("grant_uses_exhausted", "the grant has no uses left")
        else:
            use.refusal = GrantError("grant_unknown", "the grant is not known to this issuer")
    nonces = [u.nonce for u in refused if u.nonce is not None]
    if nonces:  # a refused use changes nothing
        tx.execute(_FORGET_NONCES.format(ids=_marks(len(nonces))), nonces)
