"""Folding each audit batch into the risk baselines in the batch's own transaction.

The audit writer shows every batch to a :class:`BatchFolder` (its
:class:`~proctor.audit.BatchObserver`) before the batch commits. In that
transaction, in this order:

1. the mark of what was folded (the audit head row's ``folded``) is found where the
   head the batch is chained onto stands, and moves to the batch's last event with
   the head, in the head's own compare-and-set (:attr:`WriteCursor.fold_mark`). It
   stands at the head only if every event before the batch was folded — the writers
   of every process fold what they append, and the head is locked while they do, so
   events are folded in chain order, each once. So the mark is not read: the batch
   expects it at its head, and the compare-and-set checks. Where it stood elsewhere
   the batch is rolled back and built again with the mark read (so also after a batch
   of this folder's left it behind, below, until one moves it again);
2. if it stood elsewhere (events appended by a writer that does not fold, say an
   operator command's, or before this version), the events between are read and
   folded first, when they are few (at most ``MAX_GAP``); when they are more, nothing
   is folded here (the mark stays) and the engine's own catch-up
   (:meth:`RiskEngine.catch_up`, from the mark) is asked for, in the background;
3. each event about an agent is folded into its baseline, the baselines are scored
   and written, and the agent's row gets the new score and named factors only if they
   differ — a conditional ``UPDATE``, no read; none at all when the batch's own
   confirmation of the agent (the grant use's read of its row, in this transaction)
   shows the new score and factors already. The change feed then carries the
   changed agent to every process's views: the next decision in this process sees
   the new ``principal.risk_score``, and so does every other node's once it has
   heard of the change.

The baselines this writer folded are kept in memory and trusted only while nobody
else could have changed them: the batch is chained onto the head this folder's last
batch ended at, and that batch committed (one folded but not committed — rolled back,
or retried on a moved head — drops them all). Otherwise the batch's agents are read
again in the transaction. So a process that is the only writer reads nothing to fold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from proctor.audit import AuditEvent, ChainedRows, ChainHead, EventRow, WriteCursor
from proctor.clock import Clock
from proctor.grants.agents import AgentBinding
from proctor.oversight.risk.baseline import (
    decided_again,
    fold_event,
    named,
    new_baseline,
    note_trend,
    score_and_names,
)
from proctor.oversight.risk.config import RiskConfig
from proctor.oversight.risk.written import BaselineText, as_folded
from proctor.oversight.risk.written import dumps as _dumps

__all__ = ["MAX_GAP", "BatchFolder", "Rescored", "agent_of", "named_factors"]

log = logging.getLogger(__name__)

Prior = tuple[int, tuple[str, ...]] | None
Rescored = Callable[[str, int, tuple[str, ...], Prior], None]
"""``(agent_id, score, factors, prior)``: a batch that gave the agent this score and these
named factors committed; ``prior`` the score and factors its transaction read the row at
before (None if it did not read it)."""

MAX_GAP = 1000  # events not folded yet that a batch folds first; past it, catch-up does
_LEAKS = ("gateway.leak", "gateway.redact")


def agent_of(event: Mapping[str, Any]) -> str | None:
    """The agent an event says something about, if any."""
    action = str(event.get("action", ""))
    if action in _LEAKS:
        detail = event.get("detail")
        agent = detail.get("agent") if isinstance(detail, Mapping) else None
        return str(agent) if agent else None
    actor = event.get("actor")
    if action.startswith("tool:") and isinstance(actor, Mapping) and actor.get("type") == "agent":
        return str(actor.get("id"))
    return None


named_factors = named  # the factors a policy sees in ``principal.risk_factors``


def _statements(is_sqlite: bool) -> dict[str, str]:
    """The folder's SQL for one backend: only placeholders and fixed words go in."""
    as_json = "{p}" if is_sqlite else "CAST({p} AS json)"  # PostgreSQL: text into json
    lock = "" if is_sqlite else " FOR UPDATE"  # SQLite: the writer holds the one lock
    insert = "INSERT INTO risk_baselines (agent_id, baseline, score, updated_at)"
    statements = {
        "baselines": "SELECT agent_id, baseline FROM risk_baselines "  # noqa: S608
                     "WHERE agent_id IN ({marks})" + lock,
        "insert": f"{insert} VALUES ({{p}}, {as_json}, {{p}}, {{p}})",
        "update": f"UPDATE risk_baselines SET baseline = {as_json}, score = {{p}}, "  # noqa: S608
                  "updated_at = {p} WHERE agent_id = {p}",
        # written only when it changes (the change feed tells every view); a retired
        # agent keeps the score it had
        "publish": f"UPDATE agents SET risk_score = {{p}}, risk_factors = {as_json}, "  # noqa: S608
                   "updated_at = {p} WHERE id = {p} AND trust_state <> 'retired' AND "
                   "(risk_score <> {p} OR COALESCE(CAST(risk_factors AS TEXT), '[]') <> {p})",
    }
    if not is_sqlite:
        # PostgreSQL: the baseline's write and the publishing in one statement (one
        # round trip inside the locked head, not two); a data-modifying WITH runs
        # whatever the outer statement finds
        for kind in ("insert", "update"):
            statements[f"{kind}_publish"] = (
                f"WITH written AS ({statements[kind]}) {statements['publish']}")
    return statements


_SQL = {True: _statements(True), False: _statements(False)}

def _may_concern(action: str, actor_type: str) -> bool:
    """Whether an event can concern an agent, from its row alone (no body parsed)."""
    return (action.startswith("tool:") and actor_type == "agent") or action in _LEAKS


def _as_read(tx: WriteCursor, agent: str, score: int, names: Sequence[str]) -> bool:
    """Whether this transaction read the agent's row (the use's confirmation,
    :meth:`~proctor.grants.directory.RegisteredAgents.binding_in`) with this score and
    these named factors."""
    read = tx.confirmed.get(("agent", agent))
    return (isinstance(read, AgentBinding) and read.risk_score == score
            and read.risk_factors == tuple(names))


class BatchFolder:
    """The risk engine's observer of the audit writer (see the module docstring)."""

    def __init__(self, clock: Clock, config: RiskConfig, sensitivity_of: Callable[[str], int],
                 *, behind: Callable[[], None] = lambda: None,
                 published: Callable[[str], None] = lambda agent_id: None,
                 rescored: Rescored | None = None) -> None:
        self._clock = clock
        self._config = config
        self._sensitivity_of = sensitivity_of
        self._behind = behind  # more than MAX_GAP events not folded: the engine catches up
        self._known: dict[str, dict[str, Any]] = {}  # agent -> its baseline, as stored
        self._texts: dict[str, BaselineText] = {}  # agent -> its baseline's text, in parts
        self._known_at: int | None = None  # the head up to which `_known` is the store's
        self._folding = False  # a batch was folded into `_known` and has not committed
        self._marking = False  # the batch being written moves the mark
        self._guess = True  # expect the mark at the head: the last batch moved it there
        # agents whose row got a new score in the batch being written: told once it
        # commits, before its decisions are answered (``published``)
        # (``rescored(agent_id, score, factors)`` in its place when given: what committed)
        self._published = published
        self._rescored = rescored
        self._changed: list[tuple[str, int, tuple[str, ...], Prior]] = []

    def appending(self, tx: WriteCursor, head: ChainHead, rows: Sequence[EventRow]) -> None:
        last = rows[-1].seq
        # the events the rows were written from, when the writer gives them
        written: Sequence[AuditEvent | None] = (
            rows.events if isinstance(rows, ChainedRows) else [None] * len(rows))
        guess = self._guess and not self._folding  # not when an attempt was refused
        if self._folding or head.seq != self._known_at:
            # another writer appended (its folds are in the store only), or what this one
            # folded last was rolled back: read the baselines again
            self._forget()
            self._known_at = None
        self._folding = True
        self._marking = False
        self._changed = []
        if guess:
            mark: int | None = head.seq or None  # a chain's first batch: none yet
        else:
            found = tx.rows("SELECT folded FROM audit_head WHERE id = 1")
            mark = None if not found or found[0][0] is None else int(found[0][0])
        if (mark or 0) != head.seq:
            gap = self._gap(tx, head, mark or 0)
            if gap is None:  # the catch-up folds these: the store's baselines move on
                self._forget()
                return
            rows = [*gap, *rows]
            written = [*([None] * len(gap)), *written]
        tx.fold_mark = (mark, last)
        self._marking = True
        folded: list[tuple[str, Mapping[str, Any], float | None]] = []
        for row, source in zip(rows, written, strict=True):
            if not _may_concern(row.action, row.actor_type):
                continue
            # the event's values as its body holds them: from the event written, or
            # (a row read back, an event of another shape) the body parsed
            event: Mapping[str, Any] | None = None
            at = None  # the body's time as fold_event reads it, when not read from it
            if source is not None and (event := as_folded(source)) is not None:
                at = source.time.timestamp()
                # agent_of's answer: a tool call's (as_folded), its actor's id a str
                actor = event["actor"]
                agent = actor["id"] if actor["type"] == "agent" else None
            else:
                event = json.loads(row.body)
                agent = agent_of(event)
            if agent is not None and not decided_again(event):  # nothing to score for it
                folded.append((agent, event, at))
        if folded:
            self._fold(tx, folded)

    def appended(self, head: ChainHead) -> None:
        self._folding = False
        self._known_at = head.seq
        self._guess = self._marking
        changed, self._changed = self._changed, []
        for agent, score, names, prior in changed:
            try:
                if self._rescored is not None:
                    self._rescored(agent, score, names, prior)
                else:
                    self._published(agent)
            except Exception:  # the feed still tells; never fail a committed batch
                log.exception("risk: a view could not be told of `%s`", agent[:200])

    # the transaction's work

    def _gap(self, tx: WriteCursor, head: ChainHead, cursor: int) -> list[EventRow] | None:
        """The events after the mark (``cursor``) up to ``head``; None (nothing to move)
        when they are too many, or the mark is ahead of ``head``."""
        if cursor > head.seq:
            return None  # cannot be: folded further than the chain goes
        if head.seq - cursor > MAX_GAP:
            self._behind()
            return None
        self._forget()
        return [EventRow(int(seq), "", datetime.min, str(actor_type), "", "", str(action), None,
                         body if isinstance(body, str) else json.dumps(body), "", "")
                for seq, actor_type, action, body in tx.rows(
                    "SELECT seq, actor_type, action, body FROM audit_events "
                    "WHERE seq > {p} AND seq <= {p} ORDER BY seq", (cursor, head.seq))]

    def _fold(self, tx: WriteCursor,
              events: Sequence[tuple[str, Mapping[str, Any], float | None]]) -> None:
        agents = sorted({agent for agent, _, _ in events})
        missing = [a for a in agents if a not in self._known]
        is_new = set()
        for agent, text in self._read(tx, missing).items():
            self._known[agent] = json.loads(text) if text else new_baseline()
            if text is None:
                is_new.add(agent)
        baselines = {a: self._known[a] for a in agents}
        texts = {a: self._text_of(a, baselines[a]) for a in agents}
        for agent, event, at in events:
            try:
                if fold_event(baselines[agent], event, agent, self._config,
                              self._sensitivity_of, at=at):
                    texts[agent].changed()
            except (KeyError, TypeError, ValueError) as exc:  # a bad event skips, no more
                texts[agent].changed()  # (what it changed before it failed stays)
                log.warning("risk: an event of `%s` not folded: %s", agent, type(exc).__name__)
        now = self._clock.now()
        for agent, baseline in baselines.items():
            score, names = score_and_names(baseline, now.timestamp(), self._config)
            if note_trend(baseline, now.timestamp(), score):
                texts[agent].trend_changed()
            self._store(tx, agent, texts[agent].text(), score, names, now,
                        is_new=agent in is_new)

    def _forget(self) -> None:
        """Trust no baseline kept: read each again when next folded."""
        self._known.clear()
        self._texts.clear()

    def _text_of(self, agent: str, baseline: dict[str, Any]) -> BaselineText:
        """The text of the agent's baseline, as kept for this very object."""
        text = self._texts.get(agent)
        if text is None or text.baseline is not baseline:
            text = self._texts[agent] = BaselineText(baseline)
        return text

    def _read(self, tx: WriteCursor, agents: Sequence[str]) -> dict[str, str | None]:
        if not agents:
            return {}
        marks = ", ".join("{p}" for _ in agents)
        found: dict[str, str | None] = dict.fromkeys(agents)
        for agent, baseline in tx.rows(
                _SQL[tx.is_sqlite]["baselines"].replace("{marks}", marks), agents):
            found[str(agent)] = baseline if isinstance(baseline, str) else json.dumps(baseline)
        return found

    def _store(self, tx: WriteCursor, agent: str, baseline: str, score: int,
               names: Sequence[str], now: datetime, *, is_new: bool) -> None:
        sql = _SQL[tx.is_sqlite]
        at = tx.time(now)
        written = (agent, baseline, score, at) if is_new else (baseline, score, at, agent)
        if _as_read(tx, agent, score, names):
            # the row this transaction read (and holds: the write lock on SQLite, FOR
            # SHARE on PostgreSQL) has them already: the publishing would change nothing
            tx.execute(sql["insert" if is_new else "update"], written)
            return
        named = _dumps(names)
        published = (score, named, at, agent, score, named)
        read = tx.confirmed.pop(("agent", agent), None)  # the row may change now
        prior = (read.risk_score, tuple(read.risk_factors)) \
            if isinstance(read, AgentBinding) else None
        if tx.is_sqlite:  # no round trips: two statements
            tx.execute(sql["insert" if is_new else "update"], written)
            published_rows = tx.execute(sql["publish"], published)
        else:
            published_rows = tx.execute(sql["insert_publish" if is_new else "update_publish"],
                                        (*written, *published))
        if published_rows:  # the outer statement's count: the agent's row changed
            self._changed.append((agent, score, tuple(names), prior))
