"""Reading a JWT's claims without verifying it, to tell proctor's grants from other JWTs.

The output guard only needs to know *whose* token it saw: a token that names
proctor's issuer is treated as a leaked grant and handed to the caller, who
verifies it before acting on it. Nothing here trusts what it reads.

>>> import base64, json
>>> part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
>>> unverified_issuer(part({"alg": "ES256"}) + "." + part({"iss": "spiffe://a/proctor"}) + ".sig")
'spiffe://a/proctor'
"""

from __future__ import annotations

import base64
import binascii

from proctor.documents import parse_json
from proctor.errors import DocumentError

__all__ = ["MAX_TOKEN_CHARS", "unverified_issuer"]

MAX_TOKEN_CHARS = 16 * 1024  # grants are refused over 8 KiB; anything far larger is not one


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim of the compact JWS ``token``, unverified; None when it has none
    or is not a JWS with a JSON header and payload."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    header, payload, _ = token.split(".")
    claims = _json_part(payload)
    if claims is None or _json_part(header) is None:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def _json_part(part: str) -> dict[str, object] | None:
    try:
        data = parse_json(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)),
                          what="token part")
    except (binascii.Error, ValueError, DocumentError):  # ValueError: bad base64
        return None
    return data if isinstance(data, dict) else None
