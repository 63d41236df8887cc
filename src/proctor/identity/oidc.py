"""OIDC workload tokens: Kubernetes service-account tokens, CI runners' ID tokens.

The issuer must be configured (:class:`~proctor.identity.trust.OidcIssuer`), the
key comes from its JWKS by ``kid``, the algorithm from its allow-list and must
fit that key. The token's ``sub`` maps to exactly one agent: the one registered
with that issuer and subject. No pattern is matched at verification time, so a
subject can never stand for an agent it was not registered for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

from proctor.errors import (
    AgentUnknownError,
    ProofAlgorithmError,
    ProofClaimsError,
    ProofIssuerError,
    ProofKeyUnknownError,
)
from proctor.identity.agent import ProofMethod
from proctor.identity.proofs import AgentLookup, VerifiedIdentity, translate_jose_error
from proctor.identity.tokens import (
    UnverifiedToken,
    check_algorithm,
    check_audience,
    check_issuer,
    check_times,
    peek,
)
from proctor.identity.trust import DEFAULT_LEEWAY_SECONDS, OidcIssuer

__all__ = ["OidcVerifier", "decode_issuer_token"]

_CURVES = {"ES256": "P-256", "ES384": "P-384"}
_MAX_SUBJECT = 512


class OidcVerifier:
    """Verifies tokens of the configured OIDC issuers and maps ``sub`` to an agent."""

    method = ProofMethod.OIDC

    def __init__(self, issuers: Mapping[str, OidcIssuer], agents: AgentLookup, *,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS) -> None:
        self._issuers = dict(issuers)
        self._agents = agents
        self.leeway_seconds = leeway_seconds

    def is_issuer(self, issuer: object) -> bool:
        return isinstance(issuer, str) and issuer in self._issuers

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity:
        unverified = peek(token)
        name = unverified.claims.get("iss")
        issuer = self._issuers.get(name) if isinstance(name, str) else None
        if issuer is None:
            raise ProofIssuerError(f"issuer `{str(name)[:80]}` is not a configured OIDC issuer")
        claims, expires_at = decode_issuer_token(
            token, unverified, issuer=issuer.issuer, audience=issuer.audience,
            algorithms=issuer.algorithms, find_key=lambda kid: issuer.keys.get_by_kid(kid),
            now=now, leeway_seconds=self.leeway_seconds)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
            raise ProofClaimsError("the token has no usable `sub` claim")
        agent = self._agents.find_by_subject(issuer.issuer, subject)
        if agent is None:
            raise AgentUnknownError(f"no agent is registered for subject `{subject[:120]}` "
                                    f"of issuer `{issuer.issuer}`")
        return VerifiedIdentity(agent.id, self.method, expires_at, issuer=issuer.issuer,
                                subject=subject, claims=claims)


def decode_issuer_token(token: str, unverified: UnverifiedToken, *, issuer: str,
                        audience: str, algorithms: Sequence[str],
                        find_key: Callable[[str | None], Key], now: datetime,
                        leeway_seconds: int) -> tuple[dict[str, Any], datetime]:
    """Verify an OIDC token of ``issuer``: an allowed algorithm that fits the key its
    ``kid`` names (``find_key`` raises joserfc's error for an unknown one), the
    signature, issuer, audience and times. Returns the claims and the expiry.

    Shared by agents' workload tokens and humans' sign-in tokens.
    """
    alg = check_algorithm(unverified.header, algorithms)
    kid = unverified.header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ProofKeyUnknownError("the token's `kid` is not a string")
    try:
        key = find_key(kid)
    except JoseError as exc:
        raise ProofKeyUnknownError(f"issuer `{issuer}` has no key with the token's "
                                   "`kid`") from exc
    if key.get("use", "sig") != "sig":
        raise ProofKeyUnknownError(f"issuer `{issuer}`'s key for the `kid` is not for "
                                   "signatures")
    if alg.startswith("ES"):
        fits = isinstance(key, ECKey) and key.curve_name == _CURVES.get(alg)
    else:
        fits = isinstance(key, RSAKey)
    if not fits:
        raise ProofAlgorithmError(f"algorithm `{alg}` does not fit the issuer's key")
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except JoseError as exc:
        raise translate_jose_error(exc) from exc
    check_issuer(claims, issuer)
    check_audience(claims, audience)
    return claims, check_times(claims, now=now, leeway_seconds=leeway_seconds)
