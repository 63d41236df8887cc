"""OIDC tokens of configured issuers: one verifier for agents' workload tokens and
humans' sign-in tokens.

An :class:`OidcIssuer` is configured with its audience, its allowed algorithms and
where its keys come from (a JWKS file or URL, :mod:`proctor.identity.jwks`).
:class:`OidcTokenVerifier` checks a token of one of its issuers, in this order:

1. the token is read, bounded (:func:`~proctor.identity.tokens.peek`);
2. its ``iss`` is a configured issuer, else ``proof_wrong_issuer``;
3. its ``alg`` is in that issuer's allow-list (never ``none`` or HMAC);
4. the key its ``kid`` names exists (the key set is fetched again once for an
   unknown ``kid``), is for signatures and fits the algorithm;
5. the signature, then ``iss``, ``aud`` and the times, against the injected
   clock with the leeway.

What the verified subject means is the caller's, through the issuer's
``subject_claim``: the one agent registered for that issuer and subject
(:class:`OidcVerifier`: Kubernetes service-account tokens, CI runners' ID
tokens), or a human with roles (:mod:`proctor.identity.humans`). No pattern is
matched at verification time, so a subject never stands for an agent it was not
registered for.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from joserfc.errors import JoseError
from joserfc.jwk import Key

from proctor.clock import Clock, SystemClock
from proctor.errors import AgentError, ConfigError, IdentityError
from proctor.identity.agent import ProofMethod
from proctor.identity.jwks import KeySource, import_key_set, refreshing
from proctor.identity.proofs import AgentLookup, VerifiedIdentity
from proctor.identity.tokens import (
    DEFAULT_LEEWAY_SECONDS,
    check_algorithm,
    check_audience,
    check_issuer,
    check_signature,
    check_sole_audience,
    check_times,
    peek,
)

__all__ = ["DEFAULT_ALGORITHMS", "OIDC_ALGORITHMS", "OidcIssuer", "OidcTokenVerifier",
           "OidcVerifier", "VerifiedToken", "issuer_settings"]

OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
DEFAULT_ALGORITHMS = ("RS256", "ES256")
_MAX_SUBJECT = 512
_SETTINGS = frozenset({"issuer", "audience", "jwks_file", "jwks_url", "algorithms"})


@dataclass(frozen=True, slots=True)
class OidcIssuer:
    """An OIDC provider whose tokens proctor accepts: for agents or for humans.

    ``subject_claim`` is the claim that names the agent or human (``sub`` by
    default). ``subject_template`` (agents only) gives the ``sub`` an agent
    registered without an explicit subject is expected to present; ``{name}`` is
    the agent's name and the only placeholder, so it cannot match more than one.
    """

    issuer: str
    audience: str
    keys: KeySource
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    subject_claim: str = "sub"
    subject_template: str | None = None

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise ConfigError("an OIDC issuer needs `issuer` and `audience`")
        bad = [a for a in self.algorithms if a not in OIDC_ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigError(f"OIDC issuer `{self.issuer}`: algorithm `{(bad or [''])[0]}` is "
                              f"not allowed (use {', '.join(OIDC_ALGORITHMS)})")
        if self.subject_template is not None:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.subject_template)
                      if f is not None]
            if fields != ["name"]:
                raise ConfigError(f"OIDC issuer `{self.issuer}`: subject template must contain "
                                  "`{name}` once and no other placeholder")

    def subject_for(self, name: str) -> str | None:
        """The subject the template gives agent ``name``, or None without a template."""
        return self.subject_template.format(name=name) if self.subject_template else None

    def names_audience(self, claims: Mapping[str, Any]) -> bool:
        """True if ``claims`` (unverified) are for this issuer's audience."""
        aud = claims.get("aud")
        return self.audience in ([aud] if isinstance(aud, str) else
                                 aud if isinstance(aud, list) else [])


IssuerT = TypeVar("IssuerT", bound=OidcIssuer)


@dataclass(frozen=True, slots=True)
class VerifiedToken(Generic[IssuerT]):
    """A token whose signature, issuer, audience and times hold."""

    issuer: IssuerT
    claims: dict[str, Any]
    expires_at: datetime

    @property
    def subject(self) -> object:
        """The issuer's ``subject_claim``, as the token has it (the caller checks it)."""
        return self.claims.get(self.issuer.subject_claim)


class OidcTokenVerifier(Generic[IssuerT]):
    """Checks tokens of the configured ``issuers`` (module docstring, steps 1 to 5)."""

    def __init__(self, issuers: Iterable[IssuerT], *,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self.leeway_seconds = leeway_seconds

    def issuer_of(self, claims: Mapping[str, Any]) -> IssuerT | None:
        """The configured issuer ``claims`` (unverified) name, if any."""
        name = claims.get("iss")
        return self._issuers.get(name) if isinstance(name, str) else None

    def verify(self, token: str, *, now: datetime) -> VerifiedToken[IssuerT]:
        unverified = peek(token)
        issuer = self.issuer_of(unverified.claims)
        if issuer is None:
            name = str(unverified.claims.get("iss"))[:80]
            raise IdentityError("proof_wrong_issuer",
                                f"issuer `{name}` is not a configured OIDC issuer")
        alg = check_algorithm(unverified.header, issuer.algorithms)
        key = _key(issuer, unverified.header.get("kid"))
        check_signature(unverified, alg, key.public_key, whose="the issuer's key")
        claims = unverified.claims
        check_issuer(claims, issuer.issuer)
        check_audience(claims, issuer.audience)
        expires_at = check_times(claims, now=now, leeway_seconds=self.leeway_seconds)
        return VerifiedToken(issuer, claims, expires_at)


def _key(issuer: OidcIssuer, kid: object) -> Key:
    """The issuer's signing key for ``kid``, its key set fetched again once if unknown."""
    if kid is not None and not isinstance(kid, str):
        raise IdentityError("proof_key_unknown", "the token's `kid` is not a string")
    try:
        try:
            key = issuer.keys.current(refresh=False).get_by_kid(kid)
        except JoseError:
            key = issuer.keys.current(refresh=True).get_by_kid(kid)
    except JoseError as exc:
        raise IdentityError("proof_key_unknown",
                            f"issuer `{issuer.issuer}` has no key with the token's "
                                   "`kid`") from exc
    if key.get("use", "sig") != "sig":
        raise IdentityError("proof_key_unknown",
                            f"issuer `{issuer.issuer}`'s key for the `kid` is not for "
                                   "signatures")
    return key


class OidcVerifier:
    """Agents' workload tokens: ``sub`` maps to the one agent registered for it."""

    method = ProofMethod.OIDC

    def __init__(self, issuers: Mapping[str, OidcIssuer], agents: AgentLookup, *,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS) -> None:
        self._tokens = OidcTokenVerifier(issuers.values(), leeway_seconds=leeway_seconds)
        self._agents = agents
        self.leeway_seconds = leeway_seconds

    def is_issuer(self, issuer: object) -> bool:
        return self._tokens.issuer_of({"iss": issuer}) is not None

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity:
        verified = self._tokens.verify(token, now=now)
        check_sole_audience(verified.claims, verified.issuer.audience)
        issuer, subject = verified.issuer.issuer, verified.subject
        if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
            raise IdentityError("proof_claims_invalid", "the token has no usable `sub` claim")
        agent = self._agents.find_by_subject(issuer, subject)
        if agent is None:
            raise AgentError("agent_unknown",
                                f"no agent is registered for subject `{subject[:120]}` "
                                    f"of issuer `{issuer}`")
        return VerifiedIdentity(agent.id, self.method, verified.expires_at, issuer=issuer,
                                subject=subject, claims=verified.claims)


def issuer_settings(entry: Mapping[str, Any], base: Path, *, also: Collection[str],
                    clock: Clock | None = None) -> dict[str, Any]:
    """``issuer``, ``audience``, ``keys`` and ``algorithms`` of one ``[[oidc_issuers]]``
    table, for :class:`OidcIssuer` or a subclass; ``also`` are the other keys the table
    may have. Keys come from ``jwks_file`` (beside the config, at ``base``) or
    ``jwks_url``, and are loaded again as :class:`~proctor.identity.jwks.Refreshing`
    says (a withdrawn key stops verifying within five minutes)."""
    unknown = sorted(set(entry) - (_SETTINGS | set(also)))
    if unknown:
        raise ConfigError(f"OIDC issuer entry has unknown key `{unknown[0]}`")
    what = f"the key set of OIDC issuer `{str(entry.get('issuer'))[:200]}`"
    keys: KeySource = refreshing(entry, base, clock or SystemClock(), what=what,
                                 parse=lambda document: import_key_set(document, what))
    return {"issuer": str(entry["issuer"]), "audience": str(entry["audience"]), "keys": keys,
            "algorithms": tuple(entry.get("algorithms", DEFAULT_ALGORITHMS))}
