"""Who is calling the API: a human with roles, or an agent.

Humans and agents are different principal types everywhere: in the
control-plane policies (``Human`` and ``Agent``), in rate limits and in the
audit log. An agent's only role is ``agent``; a human's roles are some of
``admin``, ``approver`` and ``auditor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from proctor.audit import Actor, ActorType
from proctor.human_ids import canonical_human_id
from proctor.identity.humans import HUMAN_ROLES

__all__ = ["HUMAN_ROLES", "ROLES", "Principal", "PrincipalKind"]

ROLES = (*HUMAN_ROLES, "agent")


class PrincipalKind(StrEnum):
    HUMAN = "human"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``method`` says how it was authenticated: ``api_token`` or ``oidc`` for
    humans; ``grant`` (a grant with a DPoP proof), ``own_key``, ``jwt_svid`` or
    ``oidc`` (a workload proof) for agents. ``owner`` is an agent's accountable
    human; ``credential`` names the credential without revealing it (an API
    token's accessor, a grant's id). A human's id and an agent's owner are kept
    in canonical form (:mod:`proctor.human_ids`) whatever credential named them,
    so every comparison the API and the console make between humans (separation
    of duties, ``principal.owner`` in the control-plane policies) is between
    canonical forms.
    """

    kind: PrincipalKind
    id: str
    roles: frozenset[str]
    method: str
    owner: str = ""
    credential: str = ""

    def __post_init__(self) -> None:
        if self.kind is PrincipalKind.HUMAN:
            object.__setattr__(self, "id", canonical_human_id(self.id))
        if self.owner:
            object.__setattr__(self, "owner", canonical_human_id(self.owner))

    @property
    def rate_key(self) -> str:
        """The rate-limit bucket: one per principal."""
        return f"{self.kind.value}:{self.id}"

    @property
    def actor(self) -> Actor:
        if self.kind is PrincipalKind.AGENT:
            return Actor(ActorType.AGENT, self.id, self.owner)
        return Actor(ActorType.HUMAN, self.id)

    @property
    def cedar_type(self) -> str:
        return "Agent" if self.kind is PrincipalKind.AGENT else "Human"

    def entity(self) -> dict[str, Any]:
        """The principal as a Cedar entity of the control-plane schema."""
        attrs: dict[str, Any] = {"roles": sorted(self.roles)}
        if self.kind is PrincipalKind.AGENT:
            attrs["owner"] = self.owner
        return {"uid": {"type": self.cedar_type, "id": self.id}, "attrs": attrs, "parents": []}

    def as_json(self) -> dict[str, Any]:
        return {"type": self.kind.value, "id": self.id, "roles": sorted(self.roles),
                "method": self.method, "owner": self.owner or None}
