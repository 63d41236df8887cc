"""Agents as this process holds them: read once, then from memory while the change
feed proves them current.

:class:`AgentView` answers :meth:`~AgentView.find` from memory when it can show
its copy is current (:meth:`~proctor.store.changes.ChangeFeed.catch_up`), and from
the registry otherwise (the feed is down: never a stale answer). A change to one
agent, made by any process, drops that agent's entry only and tells the view's
listeners (the policy engine's updater rebuilds that agent's entity alone).

>>> view = AgentView(registry, feed)                    # doctest: +SKIP
>>> view.on_change(lambda agent_id, agent: ...)         # doctest: +SKIP
>>> view.find("spiffe://acme.example/agent/coder")      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
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
            return held
        mark = self._feed.epoch, self._forgotten
        agent = self._registry.find(agent_id)
        if agent is not None and (self._feed.epoch, self._forgotten) == mark \
                and self._feed.is_current:
            with self._lock:
                if len(self._held) >= _MAX_HELD:
                    self._held.clear()
                if (self._feed.epoch, self._forgotten) == mark:
                    self._held[agent_id] = agent
                    if agent.id != agent_id:  # found under another spelling
                        self._held[agent.id] = agent
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
        """Drop the agent this process just changed (its registry, its audit writer's
        risk fold), before the feed tells (on PostgreSQL its news may still be on the
        way): the next decision here reads the agent as committed, not the copy its
        write would refuse (``agent_changed``)."""
        with self._lock:
            self._forgotten += 1
            self._held.pop(agent_id, None)
            for key in [k for k, a in self._held.items() if a.id == agent_id]:
                del self._held[key]

    def _changed(self, found: Sequence[Change]) -> None:
        ids = list(dict.fromkeys(c.key for c in found if c.kind == "agent"))
        if not ids:
            return
        with self._lock:
            for agent_id in ids:
                self._held.pop(agent_id, None)
            for key in [k for k, a in self._held.items() if a.id in ids]:
                del self._held[key]
        for agent_id in ids:
            try:
                agent = self._registry.find(agent_id)
            except Exception:  # the entry is gone: the next find reads the store
                log.exception("agent `%s` changed but could not be read", agent_id[:200])
                continue
            for listener in self._listeners:
                listener(agent_id, agent)

    def _reset(self) -> None:
        with self._lock:
            self._held.clear()
        for reset in self._resets:
            reset()
