"""The agent registry as the grants part sees it."""

from __future__ import annotations

from proctor.grants.authority import AgentBinding
from proctor.identity import AgentRegistry
from proctor.identity.agent import ACTIVE_STATES
from proctor.store import Store

__all__ = ["RegisteredAgents"]

_BINDING = "SELECT id, key_thumbprint, trust_state FROM agents WHERE id = {p}"


class RegisteredAgents:
    """Looks agents up in the store on every call, so a suspension takes effect at once.

    Every grant check asks, so the look-up takes the store's fast read path; an id
    not found as written goes through the registry, which normalises it.
    """

    def __init__(self, registry: AgentRegistry, store: Store) -> None:
        self._registry = registry
        self._store = store

    def binding(self, agent_id: str) -> AgentBinding | None:
        rows = self._store.fetch(_BINDING, [agent_id])
        if rows:
            found, thumbprint, state = rows[0]
            return AgentBinding(found, thumbprint, state in ACTIVE_STATES)
        agent = self._registry.find(agent_id)
        if agent is None:
            return None
        return AgentBinding(agent.id, agent.key_thumbprint, agent.is_active)
