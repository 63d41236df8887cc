"""Reading a JWT's claims without verifying it, to tell proctor's grants from other JWTs.

The output guard only needs to know *whose* token it saw: a token that names
proctor's issuer is treated as a leaked grant and handed to the caller, who
verifies it before acting on it. Nothing here trusts what it reads; the token
is read by :func:`proctor.jose.read_compact`, bounded in size and nesting.

>>> import json
>>> from proctor.jose import b64url_encode
>>> part = lambda d: b64url_encode(json.dumps(d).encode())
>>> unverified_issuer(part({"alg": "ES256"}) + "." + part({"iss": "spiffe://a/proctor"}) + ".sig")
'spiffe://a/proctor'
"""

from __future__ import annotations

from proctor.errors import DocumentError
from proctor.jose import read_compact

__all__ = ["MAX_TOKEN_CHARS", "unverified_issuer"]

MAX_TOKEN_CHARS = 16 * 1024  # grants are refused over 8 KiB; anything far larger is not one


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim of the compact JWS ``token``, unverified; None when it has none
    or is not a JWS with a JSON header and payload."""
    try:
        claims = read_compact(token, max_bytes=MAX_TOKEN_CHARS, what="token").claims
    except DocumentError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None
