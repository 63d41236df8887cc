"""Own-key proofs: a short-lived JWS the agent signs with its registered key.

The proof is a compact JWT, like an RFC 7523 client assertion::

    header  {"alg": "ES256" | "Ed25519" | "EdDSA", "typ": "JWT", "kid": <thumbprint>?}
    claims  {"sub": <agent SPIFFE ID>, "iss": <same, optional>, "aud": <proctor audience>,
             "iat": ..., "exp": ... (at most 5 minutes after iat), "jti": ...}

The key is the one registered for ``sub``; ``alg`` must be one its type allows,
so ``none``, HS256 and an algorithm of another key type are refused before any
signature is computed.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning

from proctor.errors import (
    AgentIdError,
    AgentUnknownError,
    ProofClaimsError,
    ProofIssuerError,
    ProofKeyUnknownError,
    ProofMethodError,
)
from proctor.identity.agent import ProofMethod
from proctor.identity.agent_key import AgentKey
from proctor.identity.proofs import AgentLookup, VerifiedIdentity, translate_jose_error
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.tokens import check_algorithm, check_audience, check_times, peek
from proctor.identity.trust import DEFAULT_LEEWAY_SECONDS

__all__ = ["MAX_PROOF_LIFETIME_SECONDS", "OwnKeyVerifier"]

MAX_PROOF_LIFETIME_SECONDS = 300


class OwnKeyVerifier:
    """Verifies JWS proofs signed by an agent's own Ed25519 or P-256 key."""

    method = ProofMethod.OWN_KEY

    def __init__(self, agents: AgentLookup, *, audience: str,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
                 max_lifetime_seconds: int = MAX_PROOF_LIFETIME_SECONDS) -> None:
        self._agents = agents
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self.max_lifetime_seconds = max_lifetime_seconds

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity:
        unverified = peek(token)
        subject = unverified.claims.get("sub")
        if not isinstance(subject, str):
            raise ProofClaimsError("the proof has no `sub` claim naming the agent")
        agent_id = parse_agent_id(subject).id
        if not _names(unverified.claims.get("iss", subject), agent_id):
            raise ProofIssuerError("an own-key proof is issued by the agent it names")
        agent = self._agents.find(agent_id)
        if agent is None:
            raise AgentUnknownError(f"agent `{agent_id}` is not registered")
        if agent.proof_method is not ProofMethod.OWN_KEY or agent.key is None:
            raise ProofMethodError(
                f"agent `{agent_id}` proves its identity by `{agent.proof_method.value}`"
            )
        key = agent.key
        alg = check_algorithm(unverified.header, key.algorithms)
        kid = unverified.header.get("kid")
        if kid is not None and kid != key.thumbprint:
            raise ProofKeyUnknownError("the proof's `kid` is not the agent's key thumbprint")
        claims = _decode(token, key, alg)
        expires_at = check_times(claims, now=now, leeway_seconds=self.leeway_seconds,
                                 max_lifetime_seconds=self.max_lifetime_seconds)
        check_audience(claims, self.audience)
        return VerifiedIdentity(agent_id, self.method, expires_at,
                                key_thumbprint=key.thumbprint, issuer=agent_id,
                                subject=agent_id, claims=claims)


def _names(issuer: object, agent_id: str) -> bool:
    try:
        return isinstance(issuer, str) and parse_agent_id(issuer).id == agent_id
    except AgentIdError:
        return False


def _decode(token: str, key: AgentKey, alg: str) -> dict[str, Any]:
    try:
        if alg != "EdDSA":
            return jwt.decode(token, key.joserfc_key(), algorithms=[alg]).claims
        with warnings.catch_warnings():
            # "EdDSA" is deprecated by RFC 9864 for being curve-ambiguous; the
            # registered key already pins the curve, so the warning does not apply.
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.decode(token, key.joserfc_key(), algorithms=[alg]).claims
    except JoseError as exc:
        raise translate_jose_error(exc) from exc
