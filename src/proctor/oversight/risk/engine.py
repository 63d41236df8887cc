"""Keeping every agent's risk score current from the audit stream.

In a runtime, the audit writer folds each batch as it appends it
(:meth:`RiskEngine.folder`, :mod:`proctor.oversight.risk.folding`): the score a
decision's event changes is in the registry when that decision returns.

:meth:`RiskEngine.catch_up` folds what no writer folded (events written before, or
by a process that does not fold, when too many for a batch to take along). It reads
the audit events after its cursor through the audit part's own reader
(:func:`proctor.audit.iter_events`) — never the whole log again — folds each into
the baseline of the agent it concerns and, in one transaction holding the audit head
as the writers do, moves the cursor (the head row's ``folded`` mark) by
compare-and-set (another process that folded
the same events first wins; this one drops its work and reads again), scores and
stores the baselines and publishes the changed scores to the registry
(``agents.risk_score`` and ``risk_factors``, what Cedar sees as
``principal.risk_score``). :meth:`RiskEngine.rescore` scores every baseline again (signals
fade without events) and writes and publishes what changed in such transactions (up
to 500 agents each), from the baselines as read again in them: a score, or the factors
named with it (a factor fades below the naming level while the rounded score holds).

Publishing in the transaction that stored, with the head held, is what keeps a score
from going back: a writer's fold of a later event waits for that commit, so the
newest fold publishes last. (Publishing after the commit let a writer's newer score,
committed in between, be overwritten by the older one until the agent's next event.)

A restart loses nothing: baselines, scores and the mark are in the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, insert, select, update

from proctor.audit import StoredEvent, iter_events
from proctor.clock import Clock
from proctor.identity import AgentRegistry
from proctor.oversight.risk.baseline import (
    Factor,
    fold_event,
    new_baseline,
    note_trend,
    score_and_names,
    score_of,
)
from proctor.oversight.risk.config import RiskConfig
from proctor.oversight.risk.folding import BatchFolder, Rescored, agent_of
from proctor.store import Store, as_utc
from proctor.store.tables import agents, audit_head, risk_baselines

__all__ = ["RiskEngine", "RiskView"]

log = logging.getLogger(__name__)

_BATCH = 5000
_RESCORED = 500  # agents a rescore scores again, writes and publishes per transaction


@dataclass(frozen=True, slots=True)
class RiskView:
    """An agent's score now, explained: the prior's part, every factor, the trend."""

    agent_id: str
    score: int
    prior: float
    factors: list[Factor]
    trend: list[tuple[str, int]]
    calls: int
    updated_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"agent": self.agent_id, "score": self.score, "prior": round(self.prior, 1),
                "factors": [f.as_json() for f in self.factors],
                "trend": [{"at": at, "score": s} for at, s in self.trend],
                "calls": self.calls,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


class RiskEngine:
    """Scores agents from what they do (see the module docstring)."""

    def __init__(self, store: Store, registry: AgentRegistry, clock: Clock,
                 config: RiskConfig | None = None, *,
                 sensitivity_of: Callable[[str], int] = lambda tool: 0,
                 stage: Callable[[str], None] = lambda name: None) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self.config = config or RiskConfig()
        self._sensitivity_of = sensitivity_of
        # a point for tests to run another process's work between steps: "scored" (a
        # catch-up batch folded or a rescore scored, nothing stored), "stored" (committed)
        self._stage = stage
        self._published: Callable[[str], None] = lambda agent_id: None
        self._lock = threading.Lock()
        self._lock_soon = threading.Lock()
        self._catching_up: threading.Thread | None = None
        self._closed = False

    def folder(self, *, published: Callable[[str], None] = lambda agent_id: None,
               rescored: Rescored | None = None) -> BatchFolder:
        """The audit writer's observer that folds each batch in its transaction;
        ``published(agent_id)`` once a batch that gave the agent a new score committed
        (``rescored(agent_id, score, factors, prior)`` in its place when given: the score and
        factors committed)."""
        self._published = published  # and once a catch-up or rescore did (see _tell)
        return BatchFolder(self._clock, self.config, self._sensitivity_of,
                           behind=self.catch_up_soon, published=published, rescored=rescored)

    def catch_up_soon(self) -> None:
        """Run :meth:`catch_up` on a thread of its own, unless one is running."""
        with self._lock_soon:
            if self._closed or (self._catching_up is not None and self._catching_up.is_alive()):
                return
            log.info("risk: audit events not folded yet; catching up in the background")
            self._catching_up = threading.Thread(target=self._catch_up_quietly,
                                                 name="proctor-risk-catch-up", daemon=True)
            self._catching_up.start()

    def close(self) -> None:
        """Before the store closes: no catch-up starts any more, and one running on its
        own thread is waited for (it reads and writes the store: let go on, it took a
        connection of the closed store's pool that nobody closed)."""
        with self._lock_soon:
            self._closed = True
            running = self._catching_up
        if running is not None and running.is_alive():
            log.info("risk: waiting for the catch-up in the background before closing")
            running.join()

    def _catch_up_quietly(self) -> None:
        try:
            self.catch_up()
        except Exception as exc:  # asked for again by the next batch that finds a gap
            log.error("risk: catching up failed: %s", type(exc).__name__)

    # folding

    def catch_up(self) -> dict[str, int]:
        """Fold every audit event not folded yet; the agents whose score changed, with
        their new score."""
        with self._lock:
            changed: dict[str, int] = {}
            for _ in range(100):  # a bounded number of batches per call
                done, batch_changed = self._one_batch()
                changed.update(batch_changed)
                if done:
                    break
            return changed

    def _one_batch(self) -> tuple[bool, dict[str, int]]:
        cursor = self._cursor()
        events: list[StoredEvent] = []
        for stored in iter_events(self._store, after_seq=cursor or 0, page=1000):
            events.append(stored)
            if len(events) >= _BATCH:
                break
        if not events:
            return True, {}
        concerned = {a for a in (agent_of(e.event) for e in events) if a}
        baselines = self._load(concerned)
        for stored in events:
            agent = agent_of(stored.event)
            if agent is not None:
                try:
                    fold_event(baselines.setdefault(agent, new_baseline()), stored.event, agent,
                               self.config, self._sensitivity_of)
                except (KeyError, TypeError, ValueError) as exc:  # a bad event skips, no more
                    log.warning("risk: event at position %s not folded: %s", stored.seq,
                                type(exc).__name__)
        self._stage("scored")
        changed = self._store_batch(cursor, events[-1].seq, baselines)
        if changed is None:
            return False, {}  # another process folded these first; read again
        self._stage("stored")
        self._tell(changed)
        return len(events) < _BATCH, changed

    def rescore(self) -> dict[str, int]:
        """Score every agent again now (signals fade with time even without events);
        the agents whose published score or named factors changed, with their score."""
        with self._lock:
            with self._store.reading() as conn:
                rows = conn.execute(_with_published(select(
                    risk_baselines.c.agent_id, risk_baselines.c.baseline,
                    risk_baselines.c.score))).all()
            at = self._clock.now().timestamp()
            faded = sorted(row.agent_id for row in rows
                           if _is_stale(row) or _moved(row, score_and_names(
                               dict(row.baseline), at, self.config)))
            self._stage("scored")
            if not faded:
                return {}
            changed: dict[str, int] = {}
            for first in range(0, len(faded), _RESCORED):  # writers wait for one chunk
                with self._store.transaction() as conn:
                    # No writer folds while this holds the head: what is read again here
                    # is the newest fold of these agents, and the score published here is
                    # published before any newer one.
                    _hold_head(conn)
                    now = self._clock.now()
                    scored, moved = {}, []
                    for row in conn.execute(_with_published(
                            select(risk_baselines.c.agent_id, risk_baselines.c.baseline,
                                   risk_baselines.c.score)
                            .where(risk_baselines.c.agent_id.in_(
                                faded[first:first + _RESCORED])))):
                        score, names = score_and_names(dict(row.baseline), now.timestamp(),
                                                       self.config)
                        if score != row.score:  # only what faded (or grew) is written
                            moved.append({"a": row.agent_id, "s": score})
                        if _is_stale(row) or _moved(row, (score, names)):
                            scored[row.agent_id] = (score, names)
                    if moved:
                        conn.execute(update(risk_baselines)
                                     .where(risk_baselines.c.agent_id == bindparam("a"))
                                     .values(score=bindparam("s"), updated_at=now), moved)
                    if scored:
                        changed.update(_publish(conn, scored, now))
            self._stage("stored")
            self._tell(changed)
            return changed

    # reading

    def view(self, agent_id: str) -> RiskView:
        """The agent's score now, its factors and trend (the prior for an agent with no
        baseline yet)."""
        with self._store.reading() as conn:  # a read: never SQLite's write lock
            row = conn.execute(select(risk_baselines)
                               .where(risk_baselines.c.agent_id == agent_id)).first()
        baseline = dict(row.baseline) if row is not None else new_baseline()
        score, prior, factors = score_of(baseline, self._clock.now().timestamp(), self.config)
        trend = [(datetime.fromtimestamp(at).astimezone().isoformat(), int(s))
                 for at, s in baseline["trend"]]
        return RiskView(agent_id, score, prior, factors, trend, int(baseline["calls"]),
                        as_utc(row.updated_at) if row is not None else None)

    # the store

    def _cursor(self) -> int | None:
        """The head row's mark of what was folded (None: nothing yet, or no head)."""
        with self._store.reading() as conn:
            seq = conn.execute(select(audit_head.c.folded).where(audit_head.c.id == 1)).scalar()
        return None if seq is None else int(seq)

    def _load(self, agents: set[str]) -> dict[str, dict[str, Any]]:
        if not agents:
            return {}
        with self._store.reading() as conn:
            rows = conn.execute(select(risk_baselines.c.agent_id, risk_baselines.c.baseline)
                                .where(risk_baselines.c.agent_id.in_(sorted(agents)))).all()
        return {row.agent_id: dict(row.baseline) for row in rows}

    def _store_batch(self, cursor: int | None, last: int,
                     baselines: Mapping[str, dict[str, Any]]) -> dict[str, int] | None:
        """Score and store the baselines folded from ``cursor`` to ``last`` and publish
        their scores, in one transaction; the agents whose row changed (None: the mark
        had moved)."""
        with self._store.transaction() as conn:
            # The writers' order (head and its mark, baselines, agents): no deadlock
            # with them, and the mark's compare-and-set below makes any writer's fold of
            # what follows ``last`` wait for this commit, so it publishes after this.
            _hold_head(conn)
            moved = conn.execute(update(audit_head)
                                 .where(audit_head.c.id == 1,
                                        audit_head.c.folded.is_not_distinct_from(cursor))
                                 .values(folded=last))
            if moved.rowcount != 1:
                conn.rollback()
                return None
            now = self._clock.now()  # no fold of this store's is later (the head is held)
            scored = {}
            for agent, baseline in baselines.items():
                score, names = score_and_names(baseline, now.timestamp(), self.config)
                note_trend(baseline, now.timestamp(), score)
                scored[agent] = (score, names)
            existing = set(conn.execute(
                select(risk_baselines.c.agent_id)
                .where(risk_baselines.c.agent_id.in_(sorted(baselines)))).scalars())
            stored = [{"a": agent, "b": baseline, "s": scored[agent][0]}
                      for agent, baseline in baselines.items() if agent in existing]
            if stored:
                conn.execute(update(risk_baselines)
                             .where(risk_baselines.c.agent_id == bindparam("a"))
                             .values(baseline=bindparam("b"), score=bindparam("s"),
                                     updated_at=now), stored)
            new = [{"agent_id": agent, "baseline": baseline, "score": scored[agent][0],
                    "updated_at": now}
                   for agent, baseline in baselines.items() if agent not in existing]
            if new:
                conn.execute(insert(risk_baselines), new)
            return _publish(conn, scored, now)

    def _tell(self, changed: Mapping[str, int]) -> None:
        """Tell this process's views of the agents whose row changed (committed)."""
        for agent in changed:
            try:
                self._published(agent)
            except Exception:  # the feed still tells; never fail what committed
                log.exception("risk: a view could not be told of `%s`", agent[:200])


def _with_published(query: Select[Any]) -> Select[Any]:
    """``query`` of ``risk_baselines`` with the score published in the agent's row
    (``published``; None for an agent not registered, or retired: it keeps its score)."""
    return query.add_columns(agents.c.risk_score.label("published"),
                             agents.c.risk_factors.label("published_factors")).select_from(
        risk_baselines.outerjoin(agents, and_(agents.c.id == risk_baselines.c.agent_id,
                                              agents.c.trust_state != "retired")))


def _moved(row: Any, scored: tuple[int, list[str]]) -> bool:
    """Whether the score or the named factors of ``scored`` are not those of the row's
    last fold and the agent's row (a retired or unregistered agent: its fold's alone)."""
    score, names = scored
    if score != row.score:
        return True
    return row.published is not None and list(row.published_factors or ()) != names


def _is_stale(row: Any) -> bool:
    """Whether the agent's row holds another score than its last fold stored (left so
    by a catch-up or rescore that published after its commit, before 9441a99): the
    rescore publishes the score again, at once rather than at the agent's next event."""
    return row.published is not None and row.published != row.score


def _hold_head(conn: Connection) -> None:
    """Lock the audit head as every writer does first (PostgreSQL; on SQLite the
    transaction holds the one write lock already): no writer folds until commit."""
    conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update())


def _publish(conn: Connection, scored: Mapping[str, tuple[int, list[str]]], now: datetime
             ) -> dict[str, int]:
    """Give the agents' rows their scores and named factors, in the transaction that
    stored them, where they differ (the writers' rule: a retired agent keeps its
    score); the agents whose row changed. One read and one batch of updates."""
    changed: dict[str, int] = {}
    for row in conn.execute(select(agents.c.id, agents.c.risk_score, agents.c.risk_factors,
                                   agents.c.trust_state)
                            .where(agents.c.id.in_(sorted(scored))).with_for_update()):
        score, names = scored[row.id]
        if row.trust_state != "retired" and (row.risk_score != score
                                             or list(row.risk_factors or ()) != names):
            changed[row.id] = score
    if changed:
        conn.execute(update(agents).where(agents.c.id == bindparam("a"))
                     .values(risk_score=bindparam("s"), risk_factors=bindparam("f"),
                             updated_at=now),
                     [{"a": a, "s": s, "f": scored[a][1]} for a, s in changed.items()])
    return changed
