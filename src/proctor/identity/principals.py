"""Feeding the registry to the policy engine as Cedar principal entities.

The engine's entities are rebuilt only when they change: all of them with
:func:`sync_principals` (or ``engine.set_principals(agent_principals(...))``), one
agent with ``engine.put_agent(agent_entity_of(agent))``, which costs the same
whatever the number of agents. From then on ``principal.trust_state`` and
``principal.risk_score`` are what the registry says.

>>> engine.set_principals(agent_principals(registry.list_agents(), base=bundle.principals))
... # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from proctor.identity.agent import Agent
from proctor.identity.view import AgentView
from proctor.policy.entities import agent_entity

__all__ = ["agent_entity_of", "agent_principals", "follow_agents", "sync_principals"]


class _AgentSource(Protocol):
    def list_agents(self) -> list[Agent]: ...


class _PrincipalSink(Protocol):
    def set_principals(self, principals: Sequence[dict[str, Any]]) -> None: ...


class _AgentSink(_PrincipalSink, Protocol):
    def put_agent(self, entity: dict[str, Any]) -> None: ...

    def remove_agent(self, agent_id: str) -> None: ...


def _key(entity: dict[str, Any]) -> tuple[str, str]:
    uid = entity["uid"]
    return str(uid["type"]), str(uid["id"])


def agent_entity_of(agent: Agent) -> dict[str, Any]:
    """The Cedar entity of one registered agent (for ``engine.put_agent``)."""
    return agent_entity(agent.id, owner=agent.owner, groups=agent.groups,
                        trust_state=agent.trust_state.value, risk_score=agent.risk_score,
                        risk_factors=agent.risk_factors)


def agent_principals(agents: Iterable[Agent], base: Sequence[dict[str, Any]] = ()
                     ) -> list[dict[str, Any]]:
    """Cedar entities for ``agents``, their owners and groups, merged into ``base``.

    ``base`` is the rest of the principals (``entities.yaml``: humans with
    roles, group nesting, connectors). A registered agent replaces an entity
    of the same id in ``base``; an owner or group missing from ``base`` is
    added with no roles or parents.
    """
    entities: dict[tuple[str, str], dict[str, Any]] = {_key(e): e for e in base}
    for agent in agents:
        entity = agent_entity_of(agent)
        entities[_key(entity)] = entity
        entities.setdefault(("Human", agent.owner), {
            "uid": {"type": "Human", "id": agent.owner}, "attrs": {"roles": []}, "parents": []})
        for group in agent.groups:
            entities.setdefault(("Group", group), {
                "uid": {"type": "Group", "id": group}, "attrs": {}, "parents": []})
    return list(entities.values())


def sync_principals(engine: _PrincipalSink, registry: _AgentSource,
                    base: Sequence[dict[str, Any]] = ()) -> None:
    """Give ``engine`` the registry's current agents (on top of ``base``)."""
    engine.set_principals(agent_principals(registry.list_agents(), base))


def follow_agents(engine: _AgentSink, view: AgentView, registry: _AgentSource,
                  base: Sequence[dict[str, Any]] = ()) -> None:
    """Keep ``engine``'s agents as the store has them, from ``view``'s change feed: a
    change to one agent, in any process, puts that agent's entity alone; a reset of
    the feed (changes may have been missed) rebuilds them all."""
    def changed(agent_id: str, agent: Agent | None) -> None:
        if agent is None:
            engine.remove_agent(agent_id)
        else:
            engine.put_agent(agent_entity_of(agent))

    view.on_change(changed, reset=lambda: sync_principals(engine, registry, base))
