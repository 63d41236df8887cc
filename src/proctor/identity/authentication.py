"""Authenticating an agent from whatever proof it presents.

The registry says how each agent proves its identity, so the verifier is
chosen from the registration, not from the token: a token whose ``iss`` is a
configured OIDC issuer goes to the OIDC verifier; any other names its agent
in ``sub``, and that agent's registered method decides. A JWT-SVID presented
for an agent registered by its own key is checked against that key, and fails.

>>> authenticator = Authenticator(registry, clock=clock)      # doctest: +SKIP
>>> authenticator.authenticate(token).agent.trust_state       # doctest: +SKIP
<TrustState.TRUSTED: 'trusted'>
"""

from __future__ import annotations

from dataclasses import dataclass

from proctor.clock import Clock
from proctor.errors import IdentityError
from proctor.identity.agent import Agent, ProofMethod
from proctor.identity.jwt_svid import JwtSvidVerifier
from proctor.identity.oidc import OidcVerifier
from proctor.identity.own_key import OwnKeyVerifier
from proctor.identity.proofs import ProofVerifier, VerifiedIdentity
from proctor.identity.registry import AgentRegistry
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.tokens import peek

__all__ = ["AuthenticatedAgent", "Authenticator"]


@dataclass(frozen=True, slots=True)
class AuthenticatedAgent:
    """An active agent and the proof it was authenticated by."""

    agent: Agent
    identity: VerifiedIdentity


class Authenticator:
    """Verifies identity proofs against the registry and its trust configuration."""

    def __init__(self, registry: AgentRegistry, *, clock: Clock) -> None:
        trust = registry.trust
        self._registry = registry
        self._clock = clock
        self._oidc = OidcVerifier(trust.issuers, registry, leeway_seconds=trust.leeway_seconds)
        self._verifiers: dict[ProofMethod, ProofVerifier] = {
            ProofMethod.OWN_KEY: OwnKeyVerifier(registry, audience=trust.audience,
                                                leeway_seconds=trust.leeway_seconds),
            ProofMethod.JWT_SVID: JwtSvidVerifier(trust.bundles, audience=trust.audience,
                                                  leeway_seconds=trust.leeway_seconds),
            ProofMethod.OIDC: self._oidc,
        }

    def authenticate(self, token: str) -> AuthenticatedAgent:
        """The active agent ``token`` proves to be; raises an ``IdentityError`` otherwise.

        Codes: ``proof_*`` for the token, ``agent_id_invalid``, ``agent_unknown``,
        ``agent_not_active`` (suspended or retired).
        """
        verifier = self._verifier_for(token)
        identity = verifier.verify(token, now=self._clock.now())
        # read again: the agent may have changed while its proof was checked
        agent = self._registry.find(identity.agent_id)
        if agent is None:
            raise IdentityError("agent_unknown", f"agent `{identity.agent_id}` is not registered")
        if agent.proof_method is not identity.method:
            raise IdentityError("proof_method_mismatch",
                                f"agent `{agent.id}` proves its identity by "
                                   f"`{agent.proof_method.value}`")
        if not agent.is_active:
            raise IdentityError("agent_not_active",
                                f"agent `{agent.id}` is {agent.trust_state.value}")
        return AuthenticatedAgent(agent, identity)

    def _verifier_for(self, token: str) -> ProofVerifier:
        claims = peek(token).claims
        if self._oidc.is_issuer(claims.get("iss")):
            return self._oidc
        subject, issuer = claims.get("sub"), claims.get("iss")
        if issuer is not None and not _is_spiffe_id(subject) and not _is_spiffe_id(issuer):
            # a workload token of an issuer nobody configured, not a proof naming an agent
            raise IdentityError("proof_wrong_issuer", f"issuer `{str(issuer)[:80]}` is not trusted")
        if not isinstance(subject, str):
            raise IdentityError("proof_claims_invalid",
                                "the proof has no `sub` claim naming the agent")
        agent_id = parse_agent_id(subject).id
        agent = self._registry.find(agent_id)
        if agent is None:
            raise IdentityError("agent_unknown", f"agent `{agent_id}` is not registered")
        if agent.proof_method is ProofMethod.OIDC:
            raise IdentityError("proof_wrong_issuer",
                                f"agent `{agent_id}` proves its identity with tokens of "
                                   f"issuer `{agent.oidc_issuer}`")
        return self._verifiers[agent.proof_method]


def _is_spiffe_id(value: object) -> bool:
    return isinstance(value, str) and value[:9].lower() == "spiffe://"
