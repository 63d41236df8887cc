"""What the grants part needs of the agent registry, as a protocol (the registry's
adapter is :class:`~proctor.grants.directory.RegisteredAgents`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from proctor.audit import WriteCursor

__all__ = ["AgentBinding", "AgentDirectory", "AgentEnded"]


@dataclass(frozen=True, slots=True)
class AgentBinding:
    """What grants need to know of an agent: its registered key, and whether it is active.

    ``key_thumbprint`` is None for agents that prove themselves with a JWT-SVID or
    an OIDC token: each of their grants is bound to a key they prove themselves,
    together with their identity proof (:mod:`proctor.grants.holders`).
    """

    agent_id: str
    key_thumbprint: str | None
    is_active: bool
    trust_state: str = "trusted"
    manifest_digest: str | None = None  # the manifest it runs now: presented, else reviewed


AgentEnded = Callable[[Connection, str, str, str | None], Callable[[], None]]
"""``(conn, agent_id, reason, by)``: runs in the transaction that suspends or retires an
agent; returns what to do once it has committed."""


class AgentDirectory(Protocol):
    """What grants need of the agent registry."""

    def binding(self, agent_id: str) -> AgentBinding | None:
        """The agent's key and whether it is active, as of now (None: unknown)."""

    def prove(self, identity_proof: str) -> str:
        """The id of the active agent ``identity_proof`` (a JWT-SVID, an OIDC workload
        token or an own-key proof, for proctor's audience) proves; raises an
        :class:`~proctor.errors.IdentityError` otherwise."""

    def confirm_active(self, conn: Connection, agent_id: str) -> bool:
        """Whether the agent is active, read in ``conn``'s transaction so that a
        suspension committing meanwhile is seen (or waited for)."""

    def state_in(self, tx: WriteCursor, agent_id: str) -> str | None:
        """The agent's trust state as ``tx`` (the audit writer's transaction) sees it
        now (None: unknown): a suspension that committed first is seen, one running is
        waited for."""

    def on_deactivated(self, hook: AgentEnded) -> None:
        """Run ``hook`` in every transaction that suspends or retires an agent."""
