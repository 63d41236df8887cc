"""Checks every identity proof shares: size, header, algorithm, time, issuer, audience.

Signature checking is a separate step, done by each verifier with its own keys;
:func:`peek` reads a token *without* verifying it, only to decide which key or
verifier applies. Nothing read by :func:`peek` is trusted.

Time comes from the caller (``now=``), with a leeway bounded by
:data:`~proctor.identity.trust.MAX_LEEWAY_SECONDS`, so expiry is exact in tests.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joserfc import jws
from joserfc.errors import ExceededSizeError, JoseError

from proctor.documents import check_nesting, parse_json
from proctor.errors import (
    DocumentError,
    ProofAlgorithmError,
    ProofAudienceError,
    ProofClaimsError,
    ProofExpiredError,
    ProofIssuerError,
    ProofMalformedError,
    ProofNotYetValidError,
    ProofTooLargeError,
)

__all__ = [
    "MAX_TOKEN_BYTES",
    "UnverifiedToken",
    "check_algorithm",
    "check_audience",
    "check_issuer",
    "check_times",
    "peek",
]

MAX_TOKEN_BYTES = 8 * 1024
# Header parameters a proof may carry. Key-carrying ones (jwk, jku, x5u, x5c)
# would let a token name its own key; crit and b64 change how it is processed.
_ALLOWED_HEADER = frozenset({"alg", "kid", "typ", "cty", "x5t", "x5t#S256"})


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token's header and claims as written, before any signature check."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def peek(token: str) -> UnverifiedToken:
    """Split a compact JWS/JWT, refusing oversized or malformed input."""
    if not isinstance(token, str):
        raise ProofMalformedError("a proof must be a compact JWS string")
    if len(token) > MAX_TOKEN_BYTES:
        raise ProofTooLargeError(f"the proof is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        raw = token.encode("ascii")
        # joserfc parses the header itself (the token's size bounds it); a nested one
        # raises RecursionError there
        compact = jws.extract_compact(raw)
        claims = parse_json(compact.payload, what="the proof's payload",
                            max_bytes=MAX_TOKEN_BYTES)
        check_nesting(compact.headers(), what="the proof's header")
    except ExceededSizeError as exc:
        raise ProofTooLargeError("a part of the proof is larger than allowed") from exc
    except (DocumentError, JoseError, ValueError, TypeError, RecursionError) as exc:
        raise ProofMalformedError("the proof is not a compact JWS with a JSON payload") from exc
    header = compact.headers()
    if not isinstance(claims, dict):
        raise ProofMalformedError("the proof's payload is not a JSON object")
    extra = sorted(set(header) - _ALLOWED_HEADER)
    if extra:
        raise ProofMalformedError(f"header parameter `{extra[0][:40]}` is not accepted")
    return UnverifiedToken(header, claims)


def check_algorithm(header: Mapping[str, Any], allowed: Collection[str]) -> str:
    """The header's ``alg`` if it is in ``allowed``; ``none`` and HMAC never are."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        shown = str(alg)[:20]
        raise ProofAlgorithmError(
            f"algorithm `{shown}` is not allowed here (allowed: {', '.join(sorted(allowed))})"
        )
    return alg


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProofClaimsError(f"claim `{name}` must be a number of seconds since the epoch")
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
        raise ProofClaimsError("the proof has no `exp` claim")
    if exp <= at - leeway_seconds:
        raise ProofExpiredError("the proof has expired")
    if nbf is not None and nbf > at + leeway_seconds:
        raise ProofNotYetValidError("the proof is not valid yet (`nbf` is in the future)")
    if iat is not None and iat > at + leeway_seconds:
        raise ProofNotYetValidError("the proof was issued in the future (`iat`)")
    if max_lifetime_seconds is not None:
        if iat is None:
            raise ProofClaimsError("the proof has no `iat` claim")
        if exp - iat > max_lifetime_seconds:
            raise ProofClaimsError(
                f"the proof lives longer than {max_lifetime_seconds} seconds (`exp` - `iat`)"
            )
    try:
        return datetime.fromtimestamp(exp, tz=now.tzinfo)
    except (OverflowError, OSError, ValueError) as exc:
        raise ProofClaimsError("claim `exp` is out of range") from exc


def check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    if claims.get("iss") != issuer:
        raise ProofIssuerError(f"the proof is not from issuer `{issuer}`")


def check_audience(claims: Mapping[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise ProofAudienceError(f"the proof is not for audience `{audience}`")
