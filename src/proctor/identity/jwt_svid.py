"""JWT-SVID proofs, validated by the ``spiffe`` package against a trust bundle.

``spiffe.JwtSvid.parse_and_validate`` checks the signature with the bundle's
authority for the token's ``kid``, the ``aud`` claim, ``exp`` and that the
subject is in the bundle's trust domain. proctor adds, around it:

- the size cap and the algorithm allow-list, before the package sees the token,
  and a check that ``alg`` fits the authority's key type;
- the time checks with the injected clock and bounded leeway. The package
  (0.3.x) checks ``exp`` (and PyJWT ``nbf``) against the *system* clock with no
  leeway, so a token must pass both; in production the injected clock is the
  system clock and the stricter answer wins.

Errors of the package are translated to proctor's by the PyJWT error that
caused them, never by message text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from spiffe import JwtBundle, JwtSvid
from spiffe.bundle.jwt_bundle.errors import AuthorityNotFoundError
from spiffe.errors import PySpiffeError
from spiffe.svid.errors import InvalidAlgorithmError, InvalidTokenError

from proctor.errors import (
    ProofAlgorithmError,
    ProofAudienceError,
    ProofClaimsError,
    ProofError,
    ProofExpiredError,
    ProofIssuerError,
    ProofKeyUnknownError,
    ProofMalformedError,
    ProofNotYetValidError,
    ProofSignatureError,
)
from proctor.identity.agent import ProofMethod
from proctor.identity.proofs import VerifiedIdentity
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.tokens import check_algorithm, check_times, peek
from proctor.identity.trust import DEFAULT_LEEWAY_SECONDS

__all__ = ["SVID_ALGORITHMS", "JwtSvidVerifier"]

# The algorithms the JWT-SVID standard allows; never none or HMAC.
SVID_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                   "PS256", "PS384", "PS512")
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_MIN_RSA_BITS = 2048
_PYJWT_ERRORS: tuple[tuple[type[Exception], type[ProofError], str], ...] = (
    (pyjwt.InvalidSignatureError, ProofSignatureError, "the JWT-SVID's signature does not verify"),
    (pyjwt.ExpiredSignatureError, ProofExpiredError, "the JWT-SVID has expired"),
    (pyjwt.ImmatureSignatureError, ProofNotYetValidError, "the JWT-SVID is not valid yet"),
    (pyjwt.InvalidAudienceError, ProofAudienceError, "the JWT-SVID is not for this audience"),
    (pyjwt.MissingRequiredClaimError, ProofClaimsError, "the JWT-SVID lacks a required claim"),
    (pyjwt.InvalidAlgorithmError, ProofAlgorithmError, "the JWT-SVID's algorithm is not allowed"),
    (pyjwt.InvalidKeyError, ProofAlgorithmError, "the JWT-SVID's algorithm does not fit the key"),
)


class JwtSvidVerifier:
    """Verifies JWT-SVIDs whose subject is in a trust domain with a configured bundle."""

    method = ProofMethod.JWT_SVID

    def __init__(self, bundles: Mapping[str, JwtBundle], *, audience: str,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS) -> None:
        self._bundles = dict(bundles)
        self.audience = audience
        self.leeway_seconds = leeway_seconds

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity:
        unverified = peek(token)
        alg = check_algorithm(unverified.header, SVID_ALGORITHMS)
        subject = unverified.claims.get("sub")
        if not isinstance(subject, str):
            raise ProofClaimsError("the JWT-SVID has no `sub` claim")
        agent = parse_agent_id(subject)
        bundle = self._bundles.get(agent.trust_domain)
        if bundle is None:
            raise ProofIssuerError(f"no trust bundle is configured for trust domain "
                                   f"`{agent.trust_domain}`")
        kid = unverified.header.get("kid")
        authority = bundle.get_jwt_authority(kid) if isinstance(kid, str) and kid else None
        if authority is None:
            raise ProofKeyUnknownError(f"the trust bundle of `{agent.trust_domain}` has no "
                                       "key with the JWT-SVID's `kid`")
        _check_key_fits(alg, authority)
        svid = _parse_and_validate(token, bundle, self.audience)
        if str(svid.spiffe_id) != agent.id:
            raise ProofClaimsError("the JWT-SVID's subject is not the agent it was checked for")
        # The signature now covers the payload that peek() parsed, so its claims
        # are verified; the package keeps its own copy private.
        claims = unverified.claims
        expires_at = check_times(claims, now=now, leeway_seconds=self.leeway_seconds)
        return VerifiedIdentity(agent.id, self.method, expires_at, issuer=agent.trust_domain,
                                subject=agent.id, claims=dict(claims))


def _check_key_fits(alg: str, authority: object) -> None:
    if alg.startswith("ES"):
        fits = (isinstance(authority, ec.EllipticCurvePublicKey)
                and isinstance(authority.curve, _CURVES[alg]))
    else:
        fits = (isinstance(authority, rsa.RSAPublicKey)
                and authority.key_size >= _MIN_RSA_BITS)
    if not fits:
        raise ProofAlgorithmError(f"algorithm `{alg}` does not fit the bundle key for the `kid`")


def _parse_and_validate(token: str, bundle: JwtBundle, audience: str) -> JwtSvid:
    try:
        return JwtSvid.parse_and_validate(token, bundle, {audience})
    except InvalidTokenError as exc:
        cause = exc.__cause__
        if isinstance(cause, pyjwt.MissingRequiredClaimError) and cause.claim == "aud":
            raise ProofAudienceError("the JWT-SVID names no audience") from exc
        for error_type, proctor_error, message in _PYJWT_ERRORS:
            if isinstance(cause, error_type):
                raise proctor_error(message) from exc
        if isinstance(cause, pyjwt.PyJWTError):
            raise ProofMalformedError("the JWT-SVID cannot be decoded") from exc
        raise ProofClaimsError("the JWT-SVID's claims are not valid") from exc
    except InvalidAlgorithmError as exc:
        raise ProofAlgorithmError("the JWT-SVID's algorithm is not allowed") from exc
    except AuthorityNotFoundError as exc:
        raise ProofKeyUnknownError("the trust bundle has no key with the JWT-SVID's `kid`") \
            from exc
    except PySpiffeError as exc:
        raise ProofMalformedError("the JWT-SVID is not valid") from exc
    except (KeyError, TypeError, ValueError) as exc:
        # e.g. a token without `exp`: the package reads claims["exp"] unguarded
        raise ProofClaimsError("the JWT-SVID lacks a required claim") from exc
