"""A registered agent, its trust state and how it proves who it is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from proctor.identity.agent_key import AgentKey
from proctor.identity.manifest import Manifest

__all__ = [
    "Agent",
    "JwtSvidProof",
    "OidcProof",
    "OwnKeyProof",
    "ProofMethod",
    "ProofSpec",
    "TrustState",
]


class TrustState(StrEnum):
    """Whether policy may trust the agent; see docs/identity.md for who changes it.

    ``trusted``: runs the manifest a human reviewed. ``drifted``: presented
    another manifest; policy sees it. ``suspended``: denied everything until a
    human reviews it again. ``retired``: denied everything, for good.
    ``unattested``: a manifest field the deployment requires the platform to attest
    was not in its workload token; policy sees it (as it sees drift).
    """

    TRUSTED = "trusted"
    DRIFTED = "drifted"
    UNATTESTED = "unattested"
    SUSPENDED = "suspended"
    RETIRED = "retired"


ACTIVE_STATES = frozenset({TrustState.TRUSTED, TrustState.DRIFTED, TrustState.UNATTESTED})
"""The states in which an agent may act; suspended and retired agents are denied everything."""


class ProofMethod(StrEnum):
    OWN_KEY = "own_key"
    JWT_SVID = "jwt_svid"
    OIDC = "oidc"


@dataclass(frozen=True, slots=True)
class OwnKeyProof:
    """The agent signs a short-lived JWS with its own key (Ed25519 or P-256)."""

    jwk: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class JwtSvidProof:
    """The agent presents JWT-SVIDs, checked against its trust domain's bundle."""


@dataclass(frozen=True, slots=True)
class OidcProof:
    """The agent presents workload tokens of ``issuer`` whose ``sub`` is ``subject``.

    ``issuer`` may be left out when exactly one issuer is configured;
    ``subject`` may be left out when that issuer has a subject template.
    """

    subject: str | None = None
    issuer: str | None = None


ProofSpec = OwnKeyProof | JwtSvidProof | OidcProof


@dataclass(frozen=True, slots=True)
class Agent:
    """One registered agent, as stored."""

    id: str
    name: str
    trust_domain: str
    owner: str
    groups: tuple[str, ...]
    proof_method: ProofMethod
    key: AgentKey | None
    oidc_issuer: str | None
    oidc_subject: str | None
    trust_state: TrustState
    risk_score: int
    manifest: Manifest
    presented_manifest: Manifest | None
    reviewed_by: str
    reviewed_at: datetime
    state_changed_by: str | None
    state_reason: str | None
    created_at: datetime
    updated_at: datetime
    risk_factors: tuple[str, ...] = ()  # the factors that raised the score most

    @property
    def is_active(self) -> bool:
        """False for suspended and retired agents, which are denied everything."""
        return self.trust_state in ACTIVE_STATES

    @property
    def key_thumbprint(self) -> str | None:
        return self.key.thumbprint if self.key else None

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def presented_digest(self) -> str | None:
        return self.presented_manifest.digest if self.presented_manifest else None

    @property
    def review_digest(self) -> str:
        """The digest of the manifest a review adopts unless given another: the presented
        one, else the reviewed one (a suspended agent reinstated). A review names it."""
        return self.presented_digest or self.manifest_digest

    def as_json(self) -> dict[str, Any]:
        """A JSON view for the CLI and API (public key members only, no secrets)."""
        presented = self.presented_manifest
        return {
            "id": self.id,
            "name": self.name,
            "trust_domain": self.trust_domain,
            "owner": self.owner,
            "groups": list(self.groups),
            "proof_method": self.proof_method.value,
            "public_jwk": dict(self.key.jwk) if self.key else None,
            "key_thumbprint": self.key_thumbprint,
            "oidc_issuer": self.oidc_issuer,
            "oidc_subject": self.oidc_subject,
            "trust_state": self.trust_state.value,
            "risk_score": self.risk_score,
            "risk_factors": list(self.risk_factors),
            "manifest": self.manifest.as_json(),
            "manifest_digest": self.manifest_digest,
            "presented_manifest": presented.as_json() if presented else None,
            "presented_digest": self.presented_digest,
            "manifest_differences": (
                {k: {"reviewed": a, "presented": b}
                 for k, (a, b) in self.manifest.differences(presented).items()}
                if presented else {}
            ),
            "reviewed_by": self.reviewed_by,
            "reviewed_at": self.reviewed_at.isoformat(),
            "state_changed_by": self.state_changed_by,
            "state_reason": self.state_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
