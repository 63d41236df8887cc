"""JWT-SVIDs (the SPIFFE JWT-SVID standard), checked against the trust bundle of the
subject's trust domain.

The ``spiffe`` package holds the bundles (:class:`spiffe.JwtBundle`: the trust
domain's JWT authorities by key id); the token is checked here, by the same steps
as every identity proof (:mod:`proctor.identity.tokens`), in this order:

1. read, bounded; ``typ``, if present, is ``JWT`` or ``JOSE``;
2. ``alg`` from the standard's list (RS, PS, ES 256 to 512; never ``none`` or HMAC);
3. ``sub`` is an agent's SPIFFE ID, and its trust domain has a bundle;
4. the bundle (loaded again as :class:`~proctor.identity.jwks.Refreshing` says: five
   minutes old, or a ``kid`` not seen yet) has an authority for the ``kid``, and
   ``alg`` fits it (RSA keys of at least 2048 bits, EC keys of the algorithm's curve);
5. the signature; ``aud`` is proctor's audience alone (a list naming others is
   refused: each of them could present the token as the agent); ``exp`` (required),
   ``nbf`` and ``iat`` against the injected clock, with the leeway.

Only the injected clock decides time: the package's own validation (through
PyJWT, against the system clock with no leeway) is not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from proctor.errors import IdentityError
from proctor.identity.agent import ProofMethod
from proctor.identity.jwks import Source
from proctor.identity.proofs import VerifiedIdentity
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.tokens import (
    DEFAULT_LEEWAY_SECONDS,
    check_algorithm,
    check_signature,
    check_sole_audience,
    check_times,
    peek,
)

if TYPE_CHECKING:
    from spiffe import JwtBundle

__all__ = ["SVID_ALGORITHMS", "JwtSvidVerifier"]

# The algorithms the JWT-SVID standard allows; never none or HMAC.
SVID_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                   "PS256", "PS384", "PS512")
_TYPES = ("JWT", "JOSE")


class JwtSvidVerifier:
    """Verifies JWT-SVIDs whose subject is in a trust domain with a configured bundle."""

    method = ProofMethod.JWT_SVID

    def __init__(self, bundles: Mapping[str, Source[JwtBundle]], *, audience: str,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS) -> None:
        self._bundles = dict(bundles)
        self.audience = audience
        self.leeway_seconds = leeway_seconds

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity:
        unverified = peek(token)
        if unverified.header.get("typ", "JWT") not in _TYPES:
            raise IdentityError("proof_malformed", "a JWT-SVID's `typ` is `JWT` or `JOSE`")
        alg = check_algorithm(unverified.header, SVID_ALGORITHMS)
        subject = unverified.claims.get("sub")
        if not isinstance(subject, str):
            raise IdentityError("proof_claims_invalid", "the JWT-SVID has no `sub` claim")
        agent = parse_agent_id(subject)
        source = self._bundles.get(agent.trust_domain)
        if source is None:
            raise IdentityError("proof_wrong_issuer",
                                f"no trust bundle is configured for trust domain "
                                   f"`{agent.trust_domain}`")
        kid = unverified.header.get("kid")
        authority = None
        if isinstance(kid, str) and kid:  # an unknown kid: the bundle loaded again (bounded)
            authority = source.current(refresh=False).get_jwt_authority(kid)
            if authority is None:
                authority = source.current(refresh=True).get_jwt_authority(kid)
        if authority is None:
            raise IdentityError("proof_key_unknown",
                                f"the trust bundle of `{agent.trust_domain}` has no "
                                       "key with the JWT-SVID's `kid`")
        check_signature(unverified, alg, authority, whose="the bundle key for the `kid`")
        claims = unverified.claims
        check_sole_audience(claims, self.audience)
        expires_at = check_times(claims, now=now, leeway_seconds=self.leeway_seconds)
        return VerifiedIdentity(agent.id, self.method, expires_at, issuer=agent.trust_domain,
                                subject=agent.id, claims=dict(claims))
