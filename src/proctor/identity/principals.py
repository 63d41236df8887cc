"""Feeding the registry to the policy engine as Cedar principal entities.

The engine's entity graph is rebuilt only when it changes, so whoever changes
an agent's trust state calls :func:`sync_principals` (or
``engine.set_principals(agent_principals(...))``) afterwards; from then on
``principal.trust_state`` and ``principal.risk_score`` are what the registry says.

>>> engine.set_principals(agent_principals(registry.list_agents(), base=bundle.principals))
... # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from proctor.identity.agent import Agent
from proctor.policy.entities import agent_entity

__all__ = ["agent_principals", "sync_principals"]


class _AgentSource(Protocol):
    def list_agents(self) -> list[Agent]: ...


class _PrincipalSink(Protocol):
    def set_principals(self, principals: Sequence[dict[str, Any]]) -> None: ...


def _key(entity: dict[str, Any]) -> tuple[str, str]:
    uid = entity["uid"]
    return str(uid["type"]), str(uid["id"])


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
        entity = agent_entity(agent.id, owner=agent.owner, groups=agent.groups,
                              trust_state=agent.trust_state.value, risk_score=agent.risk_score)
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
