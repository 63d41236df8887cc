"""Agents as this process holds them: read once, then from memory while the change
feed proves them current.

:class:`AgentView` answers :meth:`~AgentView.find` from memory when it can show
its copy is current (:meth:`~proctor.store.changes.ChangeFeed.catch_up`), and from
the registry otherwise (the feed is down: never a stale answer). A change to one
agent, made by any process, drops that agent's entry only, reads it once (kept when
this process held it, or changed it itself) and tells the view's listeners (the
policy engine's updater rebuilds that agent's entity alone). A new risk score this
process's audit writer committed is taken in place (:meth:`AgentView.rescored`): a
process's own writes do not leave its next decision to read the store.

>>> view = AgentView(registry, feed)                    # doctest: +SKIP
>>> view.on_change(lambda agent_id, agent: ...)         # doctest: +SKIP
>>> view.find("spiffe://acme.example/agent/coder")      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence

from proctor.identity.agent import Agent
from proctor.identity.registry import AgentRegistry
from proctor.store.changes import Change, ChangeFeed

__all__ = ["AgentView"]

log = logging.getLogger(__name__)

AgentChanged = Callable[[str, "Agent | None"], None]
"""``(agent_id, agent)``: the agent as it is now (None: no longer registered)."""

_MAX_HELD = 100_000


class AgentView:
    """The registry's agents, in memory while the feed is current."""

    def __init__(self, registry: AgentRegistry, feed: ChangeFeed) -> None:
        self._registry = registry
        self._feed = feed
        self._held: dict[str, Agent] = {}
        self._listeners: list[AgentChanged] = []
        self._resets: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._forgotten = 0  # moves when this process drops an agent it changed itself
        # agents this process dropped or rescored itself: the feed's news of the change
        # reads them again and keeps them (as the entries it drops)
        self._wanted: set[str] = set()
        # the new scores this process committed (agent -> (count, score, factors)), for
        # a read that was under way meanwhile; the count moves with each
        self._rescores: dict[str, tuple[int, int, tuple[str, ...]]] = {}
        self._rescoring = 0
        # statistics: finds answered from memory, and those that read the store
        self.hits = 0
        self.misses = 0
        feed.subscribe(self._changed, self._reset)
        registry.on_changed(self.forget)

    def on_change(self, listener: AgentChanged, *, reset: Callable[[], None] | None = None
                  ) -> None:
        """Call ``listener(agent_id, agent)`` after any process changed an agent, and
        ``reset()`` when changes may have been missed."""
        self._listeners.append(listener)
        if reset is not None:
            self._resets.append(reset)

    def find(self, agent_id: str) -> Agent | None:
        """The agent as the store has it, or None; from memory when the feed is current."""
        if not self._feed.catch_up():
            return self._registry.find(agent_id)
        held = self._held.get(agent_id)
        if held is not None:
            self.hits += 1
            return held
        self.misses += 1
        mark = self._mark()
        agent = self._registry.find(agent_id)
        if agent is not None:
            self._hold(agent_id, agent, mark)
        return agent

    @property
    def sees_every_commit(self) -> bool:
        """Whether a current answer honours every change committed before it was asked
        (:attr:`~proctor.store.changes.ChangeFeed.sees_every_commit`)."""
        return self._feed.sees_every_commit

    def one_look(self) -> contextlib.AbstractContextManager[None]:
        """Within the block, this thread's reads of every view share one look at the
        feed (:meth:`~proctor.store.changes.ChangeFeed.one_look`)."""
        return self._feed.one_look()

    def is_current(self) -> bool:
        """Whether answers come from memory (the feed is current) right now."""
        return self._feed.catch_up()

    def forget(self, agent_id: str) -> None:
        """Drop the agent this process just changed (its registry, a refusal
        ``agent_changed``), before the feed tells (on PostgreSQL its news may still be
        on the way): the next decision here reads the agent as committed, not the copy
        its write would refuse (``agent_changed``). The feed's news of the change reads
        it again and holds it."""
        with self._lock:
            self._forgotten += 1
            self._drop(agent_id)
            self._want(agent_id)

    def rescored(self, agent_id: str, score: int, factors: Sequence[str],
                 prior: tuple[int, tuple[str, ...]] | None = None) -> None:
        """This process's audit writer committed a new risk score and named factors for
        the agent (its risk fold, in the batch's transaction): the entry held takes
        them in place, as committed, rather than being dropped (a find after it needs
        no read of the store), when it holds what that transaction read the row at
        before (``prior``). The rest of the entry stays what the feed proved current;
        a change another process committed is delivered as ever and drops it. An entry
        at another score is dropped: it may have been read after that commit and after
        another process's on top of it (whose news came before this call), which the
        score taken in place would hide for good; an entry already at the committed
        score and factors stays (the feed's news of this commit came first: on
        PostgreSQL the notification may beat the writer's call)."""
        factors = tuple(factors)
        with self._lock:
            # a read begun before the commit and held after it takes them too (_hold)
            self._rescoring += 1
            if len(self._rescores) >= _MAX_HELD:
                self._rescores.clear()
                self._forgotten += 1  # no read begun before is held
            self._rescores[agent_id] = (self._rescoring, score, factors)
            keys = [k for k, a in self._held.items() if a.id == agent_id]
            if agent_id in self._held and agent_id not in keys:
                keys.append(agent_id)
            if not keys:
                self._want(agent_id)
            for key in keys:
                held = self._held[key]
                if (held.risk_score, tuple(held.risk_factors)) == (score, factors):
                    # read after the commit (the feed's news of it came first): it shows
                    # what committed, and any change on top of it will be delivered
                    continue
                if prior is None or (held.risk_score, tuple(held.risk_factors)) != prior:
                    self._forgotten += 1  # no read begun before is held
                    self._drop(agent_id)
                    self._want(agent_id)
                    break
                self._held[key] = dataclasses.replace(held, risk_score=score,
                                                      risk_factors=factors)

    def _want(self, agent_id: str) -> None:
        if len(self._wanted) >= _MAX_HELD:
            self._wanted.clear()
        self._wanted.add(agent_id)

    def _drop(self, agent_id: str) -> None:
        self._held.pop(agent_id, None)
        for key in [k for k, a in self._held.items() if a.id == agent_id]:
            del self._held[key]

    def _changed(self, found: Sequence[Change]) -> None:
        ids = list(dict.fromkeys(c.key for c in found if c.kind == "agent"))
        if not ids:
            return
        with self._lock:
            held = {agent_id for agent_id in ids
                    if agent_id in self._held or agent_id in self._wanted}
            held.update(a.id for a in self._held.values() if a.id in ids)
            self._wanted.difference_update(ids)
            for agent_id in ids:
                self._drop(agent_id)
            mark = self._mark()
        for agent_id in ids:
            try:
                agent = self._registry.find(agent_id)
            except Exception:  # the entry is gone: the next find reads the store
                log.exception("agent `%s` changed but could not be read", agent_id[:200])
                continue
            if agent is not None and agent_id in held:
                # read after the change committed (deliveries come one at a time): an
                # agent this process held stays warm
                self._hold(agent_id, agent, mark)
            for listener in self._listeners:
                listener(agent_id, agent)

    def _mark(self) -> tuple[int, int, int]:
        return self._feed.epoch, self._forgotten, self._rescoring

    def _hold(self, agent_id: str, agent: Agent, mark: tuple[int, int, int]) -> None:
        """Keep ``agent``, read after ``mark`` was taken, unless a change was delivered
        or this process dropped an agent meanwhile; a new score this process committed
        meanwhile (:meth:`rescored`) is taken over what was read (the read may have
        been before its commit)."""
        epoch, forgotten, rescoring = mark
        if (self._feed.epoch, self._forgotten) != (epoch, forgotten) \
                or not self._feed.is_current:
            return
        with self._lock:
            if (self._feed.epoch, self._forgotten) != (epoch, forgotten):
                return
            if self._rescoring != rescoring:
                since = self._rescores.get(agent.id)
                if since is not None and since[0] > rescoring:
                    agent = dataclasses.replace(agent, risk_score=since[1],
                                                risk_factors=since[2])
            if len(self._held) >= _MAX_HELD:
                self._held.clear()
                self._wanted.clear()
            self._held[agent_id] = agent
            if agent.id != agent_id:  # found under another spelling
                self._held[agent.id] = agent

    def _reset(self) -> None:
        with self._lock:
            self._held.clear()
            self._wanted.clear()
            self._forgotten += 1  # no read begun before is held
        for reset in self._resets:
            reset()
