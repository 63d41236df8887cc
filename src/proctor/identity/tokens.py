"""Checks every identity proof shares: size, header, algorithm, signature, time, issuer,
audience.

:func:`peek` reads a token *without* verifying it (:func:`proctor.jose.read_compact`:
bounded in size and nesting), to decide which key or verifier applies. Nothing read
by :func:`peek` is trusted until :func:`check_signature` has checked the signature
over it with the key each verifier chose; the claims it read are then the verified
ones, so a token is parsed once.

Time comes from the caller (``now=``), with a leeway bounded by
:data:`MAX_LEEWAY_SECONDS`, so expiry is exact in tests.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from proctor.errors import DocumentError, IdentityError
from proctor.jose import UnverifiedJws, key_fits, read_compact, verify_signature

__all__ = [
    "DEFAULT_LEEWAY_SECONDS",
    "MAX_LEEWAY_SECONDS",
    "MAX_TOKEN_BYTES",
    "check_algorithm",
    "check_audience",
    "check_issuer",
    "check_signature",
    "check_sole_audience",
    "check_times",
    "peek",
]

MAX_TOKEN_BYTES = 8 * 1024
DEFAULT_LEEWAY_SECONDS = 30
MAX_LEEWAY_SECONDS = 60
# Header parameters a proof may carry. Key-carrying ones (jwk, jku, x5u, x5c)
# would let a token name its own key; crit and b64 change how it is processed.
_ALLOWED_HEADER = frozenset({"alg", "kid", "typ", "cty", "x5t", "x5t#S256"})


def peek(token: str) -> UnverifiedJws:
    """Split a compact JWS/JWT, refusing oversized or malformed input."""
    if not isinstance(token, str):
        raise IdentityError("proof_malformed", "a proof must be a compact JWS string")
    if len(token) > MAX_TOKEN_BYTES:
        raise IdentityError("proof_too_large", f"the proof is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        unverified = read_compact(token, max_bytes=MAX_TOKEN_BYTES, what="the proof")
    except DocumentError as exc:
        if exc.code == "document_too_large":
            raise IdentityError("proof_too_large",
                                "a part of the proof is larger than allowed") from exc
        raise IdentityError("proof_malformed", exc.message) from exc
    extra = sorted(set(unverified.header) - _ALLOWED_HEADER)
    if extra:
        raise IdentityError("proof_malformed",
                            f"header parameter `{extra[0][:40]}` is not accepted")
    return unverified


def check_algorithm(header: Mapping[str, Any], allowed: Collection[str]) -> str:
    """The header's ``alg`` if it is in ``allowed``; ``none`` and HMAC never are."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        shown = str(alg)[:20]
        raise IdentityError(
            "proof_algorithm_not_allowed",
            f"algorithm `{shown}` is not allowed here (allowed: {', '.join(sorted(allowed))})"
        )
    return alg


def check_signature(token: UnverifiedJws, alg: str, key: object, *, whose: str) -> None:
    """Check ``token``'s signature with ``key`` (a ``cryptography`` public key), which
    ``alg`` must fit; ``whose`` names the key in the error (``the agent's key``)."""
    if not key_fits(alg, key):
        raise IdentityError("proof_algorithm_not_allowed",
                            f"algorithm `{alg}` does not fit {whose}")
    try:
        signature = token.signature_bytes()
    except ValueError:
        raise IdentityError("proof_malformed", "the proof's signature is not base64url") from None
    if not verify_signature(alg, key, token.signing_input, signature):
        raise IdentityError("proof_invalid_signature", "the proof's signature does not verify")


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IdentityError("proof_claims_invalid",
                            f"claim `{name}` must be a number of seconds since the epoch")
    return float(value)


def check_times(claims: Mapping[str, Any], *, now: datetime, leeway_seconds: int,
                max_lifetime_seconds: int | None = None) -> datetime:
    """Check ``exp`` (required), ``nbf`` and ``iat`` against ``now``; return the expiry.

    With ``max_lifetime_seconds``, ``iat`` is required too and ``exp - iat`` may
    not exceed it, which bounds how long a stolen proof can be replayed.
    """
    at = now.timestamp()
    exp = _numeric(claims, "exp")
    nbf = _numeric(claims, "nbf")
    iat = _numeric(claims, "iat")
    if exp is None:
        raise IdentityError("proof_claims_invalid", "the proof has no `exp` claim")
    if exp <= at - leeway_seconds:
        raise IdentityError("proof_expired", "the proof has expired")
    if nbf is not None and nbf > at + leeway_seconds:
        raise IdentityError("proof_not_yet_valid",
                            "the proof is not valid yet (`nbf` is in the future)")
    if iat is not None and iat > at + leeway_seconds:
        raise IdentityError("proof_not_yet_valid", "the proof was issued in the future (`iat`)")
    if max_lifetime_seconds is not None:
        if iat is None:
            raise IdentityError("proof_claims_invalid", "the proof has no `iat` claim")
        if exp - iat > max_lifetime_seconds:
            raise IdentityError(
                "proof_claims_invalid",
                f"the proof lives longer than {max_lifetime_seconds} seconds (`exp` - `iat`)"
            )
    try:
        return datetime.fromtimestamp(exp, tz=now.tzinfo)
    except (OverflowError, OSError, ValueError) as exc:
        raise IdentityError("proof_claims_invalid", "claim `exp` is out of range") from exc


def check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    if claims.get("iss") != issuer:
        raise IdentityError("proof_wrong_issuer", f"the proof is not from issuer `{issuer}`")


def check_audience(claims: Mapping[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise IdentityError("proof_wrong_audience", f"the proof is not for audience `{audience}`")


def check_sole_audience(claims: Mapping[str, Any], audience: str) -> None:
    """:func:`check_audience`, and no other audience beside ``audience``: an agent's
    workload token (a JWT-SVID, an OIDC token) is a bearer credential, and every
    audience it names receives it. A service named beside proctor could present it here
    as the agent: report a manifest (drift), end its tasks, revoke its grants."""
    check_audience(claims, audience)
    aud = claims.get("aud")
    if isinstance(aud, list) and any(a != audience for a in aud):
        raise IdentityError("proof_wrong_audience",
                            f"the token names other audiences beside `{audience}`: each of "
                            "them could present it as the agent; ask for a token for "
                            f"`{audience}` alone")
