"""Agents: registration, manifests and drift, trust states, verifying identity proofs.

An agent is a SPIFFE ID ``spiffe://<trust-domain>/agent/<name>`` with an
accountable human owner, groups, a reviewed manifest and one way to prove its
identity: its own key, JWT-SVIDs of its trust domain, or OIDC workload tokens.
See ``docs/identity.md``.

>>> from proctor.identity import Manifest, parse_agent_id
>>> parse_agent_id("spiffe://acme.example/agent/coder").name
'coder'
"""

from proctor.identity.agent import (
    Agent,
    JwtSvidProof,
    OidcProof,
    OwnKeyProof,
    ProofMethod,
    ProofSpec,
    TrustState,
)
from proctor.identity.agent_key import AgentKey, import_agent_key
from proctor.identity.authentication import (
    Attestation,
    AttestationChange,
    AuthenticatedAgent,
    Authenticator,
)
from proctor.identity.jwt_svid import JwtSvidVerifier
from proctor.identity.manifest import Manifest, load_manifest
from proctor.identity.oidc import OidcVerifier
from proctor.identity.own_key import OwnKeyVerifier
from proctor.identity.principals import (
    agent_entity_of,
    agent_principals,
    follow_agents,
    sync_principals,
)
from proctor.identity.proofs import AgentLookup, ProofVerifier, VerifiedIdentity
from proctor.identity.registry import AgentRegistry
from proctor.identity.spiffe_id import AgentId, agent_id_for, parse_agent_id
from proctor.identity.tokens import MAX_TOKEN_BYTES
from proctor.identity.trust import OidcIssuer, TrustConfig, jwt_bundle_from_jwks, load_trust_config
from proctor.identity.view import AgentView

__all__ = [
    "MAX_TOKEN_BYTES",
    "Agent",
    "AgentId",
    "AgentKey",
    "AgentLookup",
    "AgentRegistry",
    "AgentView",
    "Attestation",
    "AttestationChange",
    "AuthenticatedAgent",
    "Authenticator",
    "JwtSvidProof",
    "JwtSvidVerifier",
    "Manifest",
    "OidcIssuer",
    "OidcProof",
    "OidcVerifier",
    "OwnKeyProof",
    "OwnKeyVerifier",
    "ProofMethod",
    "ProofSpec",
    "ProofVerifier",
    "TrustConfig",
    "TrustState",
    "VerifiedIdentity",
    "agent_entity_of",
    "agent_id_for",
    "agent_principals",
    "follow_agents",
    "import_agent_key",
    "jwt_bundle_from_jwks",
    "load_manifest",
    "load_trust_config",
    "parse_agent_id",
    "sync_principals",
]
