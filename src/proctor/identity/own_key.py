"""Own-key proofs: a short-lived JWS the agent signs with its registered key.

The proof is a compact JWT, like an RFC 7523 client assertion::

    header  {"alg": "ES256" | "Ed25519" | "EdDSA", "typ": "JWT", "kid": <thumbprint>?}
    claims  {"sub": <agent SPIFFE ID>, "iss": <same, optional>, "aud": <proctor audience>,
             "iat": ..., "exp": ... (at most 5 minutes after iat), "jti": ...}

``aud`` is proctor's audience alone (a string, or a list of that one), as a JWT-SVID's:
every audience a proof names receives it, and could present it here as the agent.

The key is the one registered for ``sub``; ``alg`` must be one its type allows
(``ES256``; ``Ed25519`` or its older name ``EdDSA``, as for proofs of
possession), so ``none``, HS256 and an algorithm of another key type are refused
before any signature is computed. The signature is checked by
:func:`~proctor.identity.tokens.check_signature` over the token as it was read.

A proof presented to the API also names its request and is used once
(:mod:`proctor.identity.request_proofs`, checked by the
:class:`~proctor.identity.Authenticator` after this verifier).
"""

from __future__ import annotations

from datetime import datetime

from proctor.errors import AgentError, IdentityError
from proctor.identity.agent import Agent, ProofMethod
from proctor.identity.agent_key import AgentKey
from proctor.identity.proofs import AgentFinder, VerifiedIdentity
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.tokens import (
    DEFAULT_LEEWAY_SECONDS,
    check_algorithm,
    check_signature,
    check_sole_audience,
    check_times,
    peek,
)
from proctor.jose import PublicKey, UnverifiedJws

__all__ = ["MAX_PROOF_LIFETIME_SECONDS", "OwnKeyVerifier"]

MAX_PROOF_LIFETIME_SECONDS = 300
_MAX_KEYS = 10_000


class OwnKeyVerifier:
    """Verifies JWS proofs signed by an agent's own Ed25519 or P-256 key."""

    method = ProofMethod.OWN_KEY

    def __init__(self, agents: AgentFinder, *, audience: str,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
                 max_lifetime_seconds: int = MAX_PROOF_LIFETIME_SECONDS) -> None:
        self._agents = agents
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self.max_lifetime_seconds = max_lifetime_seconds
        # agents' keys as loaded, by their public members: a key is parsed once, not at
        # each request (every request of an agent now carries a proof of its own)
        self._keys: dict[tuple[tuple[str, str], ...], PublicKey] = {}

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity:
        return self.verify_read(peek(token), now=now)

    def verify_read(self, unverified: UnverifiedJws, *, now: datetime,
                    agent: Agent | None = None) -> VerifiedIdentity:
        """:meth:`verify` of a token already read by :func:`~proctor.identity.tokens.peek`
        (once per request, however many look at it); ``agent``: the agent its ``sub``
        names, if the caller just found it where this verifier looks."""
        subject = unverified.claims.get("sub")
        if not isinstance(subject, str):
            raise IdentityError("proof_claims_invalid",
                                "the proof has no `sub` claim naming the agent")
        agent_id = parse_agent_id(subject).id
        if not _names(unverified.claims.get("iss", subject), agent_id):
            raise IdentityError("proof_wrong_issuer",
                                "an own-key proof is issued by the agent it names")
        if agent is None or agent.id != agent_id:
            agent = self._agents.find(agent_id)
        if agent is None:
            raise AgentError("agent_unknown", f"agent `{agent_id}` is not registered")
        if agent.proof_method is not ProofMethod.OWN_KEY or agent.key is None:
            raise IdentityError(
                "proof_method_mismatch",
                f"agent `{agent_id}` proves its identity by `{agent.proof_method.value}`"
            )
        key = agent.key
        alg = check_algorithm(unverified.header, key.algorithms)
        kid = unverified.header.get("kid")
        if kid is not None and kid != key.thumbprint:
            raise IdentityError("proof_key_unknown",
                                "the proof's `kid` is not the agent's key thumbprint")
        public = self._public_key(agent_id, key)
        check_signature(unverified, alg, public, whose="the agent's key")
        claims = unverified.claims
        expires_at = check_times(claims, now=now, leeway_seconds=self.leeway_seconds,
                                 max_lifetime_seconds=self.max_lifetime_seconds)
        # proctor's audience alone: a service named beside it receives the proof, and
        # could present it here as the agent within its lifetime
        check_sole_audience(claims, self.audience)
        return VerifiedIdentity(agent_id, self.method, expires_at,
                                key_thumbprint=key.thumbprint, issuer=agent_id,
                                subject=agent_id, claims=claims)

    def _public_key(self, agent_id: str, key: AgentKey) -> PublicKey:
        members = tuple(sorted(key.jwk.items()))
        found = self._keys.get(members)
        if found is not None:
            return found
        try:
            found = key.public_key()
        except ValueError:  # registered before keys were checked as strictly
            raise IdentityError("proof_key_unknown",
                                f"agent `{agent_id}`'s registered key is not a valid "
                                       "public key; register its key again") from None
        if len(self._keys) >= _MAX_KEYS:
            self._keys.clear()
        self._keys[members] = found
        return found


def _names(issuer: object, agent_id: str) -> bool:
    try:
        return isinstance(issuer, str) and parse_agent_id(issuer).id == agent_id
    except IdentityError:  # not an agent's SPIFFE ID
        return False

