"""The agent registry as the grants part sees it."""

from __future__ import annotations

from proctor.grants.authority import AgentBinding
from proctor.identity import AgentRegistry

__all__ = ["RegisteredAgents"]


class RegisteredAgents:
    """Looks agents up in the registry on every call, so a suspension takes effect at once."""

    def __init__(self, registry: AgentRegistry) -> None:
        self._registry = registry

    def binding(self, agent_id: str) -> AgentBinding | None:
        agent = self._registry.find(agent_id)
        if agent is None:
            return None
        return AgentBinding(agent.id, agent.key_thumbprint, agent.is_active)
