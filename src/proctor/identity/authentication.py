"""Authenticating an agent from whatever proof it presents.

The registry says how each agent proves its identity, so the verifier is
chosen from the registration, not from the token: a token whose ``iss`` is a
configured OIDC issuer goes to the OIDC verifier; any other names its agent
in ``sub``, and that agent's registered method decides. A JWT-SVID presented
for an agent registered by its own key is checked against that key, and fails.

An own-key proof is checked against the request it came with
(:mod:`proctor.identity.request_proofs`): it must name that request, and it comes back
with the one use (:attr:`VerifiedIdentity.use`) the caller claims in the store, so that
it is taken once. A workload token (JWT-SVID, OIDC) is a bearer credential by its
issuer's design, and is not bound.

A workload token (JWT-SVID, OIDC) is also the platform's word about what runs: the
claims ``identity.toml`` maps to manifest fields (``[attested_manifest]``) are put
into the manifest the agent is taken to run, whatever the agent itself says. A value
that differs from the reviewed one makes the agent ``drifted`` at once; a required
field the token does not carry makes it ``unattested``, with the reason. The
caller learns it from :attr:`AuthenticatedAgent.attestation`. Only a token that changes
something writes: the authenticator's ``attest`` hook (in a runtime,
:func:`proctor.oversight.drifting.attest`) makes the :class:`Attestation` the effects of
its audit event (an :class:`AttestationChange`: which fields, the manifest digests before
and after, whose token said so), in one transaction; without the hook the registry makes
it alone, unaudited.

>>> authenticator = Authenticator(registry, clock=clock)      # doctest: +SKIP
>>> authenticator.authenticate(token).agent.trust_state       # doctest: +SKIP
<TrustState.TRUSTED: 'trusted'>
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from proctor.clock import Clock
from proctor.errors import AgentError, IdentityError
from proctor.identity.agent import Agent, ProofMethod, TrustState
from proctor.identity.jwt_svid import JwtSvidVerifier
from proctor.identity.manifest import Manifest
from proctor.identity.oidc import OidcVerifier
from proctor.identity.own_key import OwnKeyVerifier
from proctor.identity.proofs import AgentFinder, ProofVerifier, VerifiedIdentity
from proctor.identity.registry import AgentRegistry
from proctor.identity.request_proofs import BoundRequest, check_request
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.tokens import peek
from proctor.jose import UnverifiedJws

__all__ = ["Attestation", "AttestationChange", "AuthenticatedAgent", "Authenticator"]


@dataclass(frozen=True, slots=True)
class AttestationChange:
    """What a workload token's attested claims changed about its agent: the fields
    (names only), the manifest digests before and after (after is None when the token
    attests too little), the trust state it left the agent in, and whose token it was."""

    agent_id: str
    owner: str
    trust_state: str
    fields: tuple[str, ...]
    before_digest: str
    after_digest: str | None
    method: str
    issuer: str | None
    reason: str

    def as_detail(self) -> dict[str, Any]:
        """For an audit event: names and digests, never a claim's value."""
        detail: dict[str, Any] = {"attested_by": self.method, "fields": list(self.fields),
                                  "from_digest": self.before_digest, "reason": self.reason}
        if self.after_digest is not None:
            detail["to_digest"] = self.after_digest
        if self.issuer:
            detail["issuer"] = self.issuer
        return detail


@dataclass(frozen=True, slots=True)
class Attestation:
    """What a workload token attests of ``agent`` (as read before), to be made: the
    ``manifest`` it attests, or None when it attests too little (``reason`` says what);
    ``fields``: the fields that differ (or are missing)."""

    agent: Agent
    manifest: Manifest | None
    fields: tuple[str, ...]
    reason: str
    method: str
    issuer: str | None

    def values(self, registry: AgentRegistry, agent: Agent) -> dict[str, Any] | None:
        """The columns it changes in ``agent``'s row (None: nothing), by the registry's
        rule; or ``agent_not_active``."""
        if self.manifest is None:
            return registry.unattesting(agent, self.reason)
        return registry.presenting(agent, self.manifest, attested=True)

    def alone(self, registry: AgentRegistry) -> Agent:
        """Made by the registry in a transaction of its own, without an event."""
        if self.manifest is None:
            return registry.mark_unattested(self.agent.id, self.reason)
        return registry.present_manifest(self.agent.id, self.manifest, attested=True)

    def change(self, before: Agent, trust_state: str) -> AttestationChange:
        """What it changes of ``before``, leaving it ``trust_state``."""
        running = before.presented_manifest or before.manifest
        reason = self.reason if self.manifest is None else (
            f"the platform attests another {', '.join(self.fields) or 'attestation'}: "
            f"{trust_state}")
        return AttestationChange(
            agent_id=before.id, owner=before.owner, trust_state=trust_state,
            fields=self.fields, before_digest=running.digest,
            after_digest=None if self.manifest is None else self.manifest.digest,
            method=self.method, issuer=self.issuer, reason=reason)


@dataclass(frozen=True, slots=True)
class AuthenticatedAgent:
    """An active agent and the proof it was authenticated by."""

    agent: Agent
    identity: VerifiedIdentity
    attestation: str | None = None  # what the token's attested claims changed, if anything


class Authenticator:
    """Verifies identity proofs against the registry and its trust configuration.

    ``agents``: where agents are looked up by id (default the registry); a process's
    :class:`~proctor.identity.AgentView` for a caller whose own write confirms the
    agent again.

    ``attest``: makes an :class:`Attestation` that changes its agent, with its audit
    event, and returns the agent as it is then (default: the registry alone)."""

    def __init__(self, registry: AgentRegistry, *, clock: Clock,
                 attest: Callable[[Attestation], Agent] | None = None,
                 agents: AgentFinder | None = None) -> None:
        trust = registry.trust
        self._registry = registry
        self._agents = agents or registry
        self._clock = clock
        self._attest_hook = attest
        self._oidc = OidcVerifier(trust.issuers, registry, leeway_seconds=trust.leeway_seconds)
        self._own_key = OwnKeyVerifier(self._agents, audience=trust.audience,
                                       leeway_seconds=trust.leeway_seconds)
        self._verifiers: dict[ProofMethod, ProofVerifier] = {
            ProofMethod.OWN_KEY: self._own_key,
            ProofMethod.JWT_SVID: JwtSvidVerifier(trust.bundles, audience=trust.audience,
                                                  leeway_seconds=trust.leeway_seconds),
            ProofMethod.OIDC: self._oidc,
        }

    def authenticate(self, token: str, *, request: BoundRequest | None = None,
                     read: UnverifiedJws | None = None) -> AuthenticatedAgent:
        """The active agent ``token`` proves to be; raises an ``IdentityError`` otherwise.

        ``request``: the request ``token`` came with, which an own-key proof must name
        (None, the default: no request, and an own-key proof is refused); the identity
        returned carries the proof's one use, which the caller claims.

        ``read``: ``token`` as :func:`~proctor.identity.tokens.peek` read it, if the caller
        did (it is read once).

        Codes: ``proof_*`` for the token, ``agent_id_invalid``, ``agent_unknown``,
        ``agent_not_active`` (suspended or retired).
        """
        unverified = read or peek(token)
        verifier, named = self._verifier_for(unverified.claims)
        now = self._clock.now()
        identity = (self._own_key.verify_read(unverified, now=now, agent=named)
                    if verifier is self._own_key else verifier.verify(token, now=now))
        if identity.method is ProofMethod.OWN_KEY:  # never a bearer credential
            identity = replace(identity, use=check_request(
                identity.claims or {}, request, key_thumbprint=identity.key_thumbprint or "",
                now=now))
        # read again: the agent may have changed while its proof was checked
        agent = self._agents.find(identity.agent_id)
        if agent is None:
            raise AgentError("agent_unknown", f"agent `{identity.agent_id}` is not registered")
        if agent.proof_method is not identity.method:
            raise IdentityError("proof_method_mismatch",
                                f"agent `{agent.id}` proves its identity by "
                                   f"`{agent.proof_method.value}`")
        if not agent.is_active:
            raise AgentError("agent_not_active",
                                f"agent `{agent.id}` is {agent.trust_state.value}")
        return self._attest(agent, identity)

    def _attest(self, agent: Agent, identity: VerifiedIdentity) -> AuthenticatedAgent:
        """Put the token's attested claims into the manifest the agent runs."""
        trust = self._registry.trust
        if not trust.attested or identity.method is ProofMethod.OWN_KEY:
            return AuthenticatedAgent(agent, identity)
        claims = identity.claims or {}
        values = {name: found for name, claim in trust.attested.items()
                  if (found := _claim(claims, claim)) is not None}
        missing = [name for name in trust.attested_required if name not in values]
        method, issuer = identity.method.value, identity.issuer
        if missing:
            reason = (f"the workload token does not attest `{missing[0]}` (claim "
                      f"`{trust.attested[missing[0]]}`)")
            attestation = Attestation(agent, None, tuple(missing), reason, method, issuer)
        else:
            running = agent.presented_manifest or agent.manifest
            try:
                attested = running.attested(values)
            except IdentityError as exc:
                raise IdentityError("proof_claims_invalid", "an attested claim is not a "
                                    f"valid manifest value: {exc.message}") from exc
            if attested.digest == running.digest and \
                    agent.trust_state is not TrustState.UNATTESTED:
                return AuthenticatedAgent(agent, identity)
            attestation = Attestation(agent, attested, tuple(sorted(
                running.differences(attested))), "", method, issuer)
        # nothing to write (the registry's rule on the agent as read): no transaction
        if attestation.values(self._registry, agent) is None:
            return AuthenticatedAgent(agent, identity)
        updated = (self._attest_hook(attestation) if self._attest_hook is not None
                   else attestation.alone(self._registry))
        if updated.trust_state is agent.trust_state and \
                updated.presented_digest == agent.presented_digest:
            return AuthenticatedAgent(updated, identity)
        return AuthenticatedAgent(updated, identity,
                                  attestation.change(agent, updated.trust_state.value).reason)

    def _verifier_for(self, claims: Mapping[str, Any]) -> tuple[ProofVerifier, Agent | None]:
        """The verifier for a token with ``claims``, and the agent its ``sub`` names
        (None for an OIDC token, whose subject is the issuer's)."""
        if self._oidc.is_issuer(claims.get("iss")):
            return self._oidc, None
        subject, issuer = claims.get("sub"), claims.get("iss")
        if issuer is not None and not _is_spiffe_id(subject) and not _is_spiffe_id(issuer):
            # a workload token of an issuer nobody configured, not a proof naming an agent
            raise IdentityError("proof_wrong_issuer", f"issuer `{str(issuer)[:80]}` is not trusted")
        if not isinstance(subject, str):
            raise IdentityError("proof_claims_invalid",
                                "the proof has no `sub` claim naming the agent")
        agent_id = parse_agent_id(subject).id
        agent = self._agents.find(agent_id)
        if agent is None:
            raise AgentError("agent_unknown", f"agent `{agent_id}` is not registered")
        if agent.proof_method is ProofMethod.OIDC:
            raise IdentityError("proof_wrong_issuer",
                                f"agent `{agent_id}` proves its identity with tokens of "
                                   f"issuer `{agent.oidc_issuer}`")
        return self._verifiers[agent.proof_method], agent


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    """The string at ``name`` (dots walk into nested objects), or None."""
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, str) and value else None


def _is_spiffe_id(value: object) -> bool:
    return isinstance(value, str) and value[:9].lower() == "spiffe://"
