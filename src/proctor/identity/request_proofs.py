"""Own-key identity proofs bound to one request, and good for that one only.

An own-key identity proof used to be a bearer credential for its lifetime (up to five
minutes): whoever captured one (a log, a proxy) could present it as the agent. It now
names the request it was made for, with the claims of RFC 9449 (DPoP), and a body
hash::

    {"sub", "iss", "aud", "iat", "exp", "jti",
     "htm": <the request's method>, "htu": <its URL without query or fragment>,
     "bh": <base64url SHA-256 of its body's bytes; may be left out for an empty body>}

:func:`check_request` checks them, after the signature and the times, in this order:

1. ``htm`` and ``htu`` are there: a proof without them (made before proofs were
   bound, and so reusable) is ``proof_unbound``;
2. ``jti`` is a string of 8 to 128 characters and ``iat`` a whole number of seconds
   (``proof_claims_invalid``);
3. ``iat`` is within :data:`PROOF_WINDOW_SECONDS` of the
   clock, either way (``proof_expired``; a later ``iat`` than the leeway allows is
   ``proof_not_yet_valid`` already): the window for which its ``jti`` is kept;
4. ``htm`` is the request's method, ``htu`` its URL
   (:func:`~proctor.jose.dpop.request_target` on both), ``bh`` the hash of its body
   (``proof_wrong_request``).

What it returns, :class:`ProofUse`, is what the caller claims once in the store (the
table of proofs of possession's nonces, under a key of its own:
:attr:`ProofUse.nonce`), so that no process accepts the proof twice. The check itself
changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proctor.errors import IdentityError
from proctor.jose import b64url_encode
from proctor.jose.dpop import PROOF_WINDOW_SECONDS, body_hash, request_target

__all__ = ["PROOF_WINDOW_SECONDS", "BoundRequest", "ProofUse", "check_request"]

_EMPTY_BODY = body_hash(b"")


@dataclass(frozen=True, slots=True)
class BoundRequest:
    """The request a proof must name: its method, its URL as proofs name it (the
    server's ``public_url`` + path when configured), and its body as received (None:
    not known where it is checked, so no own-key proof is taken there)."""

    method: str
    url: str
    body: bytes | None


@dataclass(frozen=True, slots=True)
class ProofUse:
    """One use of a request-bound proof: its ``iat`` and a key for its ``jti`` that no
    other key's proof and no proof of possession shares."""

    issued_at: int
    nonce: str
    key_thumbprint: str


def check_request(claims: Mapping[str, Any], request: BoundRequest | None, *,
                  key_thumbprint: str, now: datetime) -> ProofUse:
    """Check that a verified own-key proof's ``claims`` name ``request`` and are fresh;
    raises an :class:`~proctor.errors.IdentityError` (see the module docstring).
    ``request`` None: the proof came with no request (to bind a key, say), where an
    own-key proof is never taken."""
    htm, htu = claims.get("htm"), claims.get("htu")
    if htm is None or htu is None:
        raise IdentityError("proof_unbound", "the own-key identity proof names no request "
                            "(`htm`, `htu`): a proof is signed for each request and used "
                            "once; update the agent's proctor SDK")
    jti, iat = claims.get("jti"), claims.get("iat")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise IdentityError("proof_claims_invalid", "the proof's `jti` must be a string of 8 "
                            "to 128 characters, new for each request")
    if type(iat) is not int:
        raise IdentityError("proof_claims_invalid", "the proof's `iat` must be a whole number "
                            "of seconds")
    if abs(int(now.timestamp()) - iat) > PROOF_WINDOW_SECONDS:
        raise IdentityError("proof_expired", f"the proof's `iat` is more than "
                            f"{PROOF_WINDOW_SECONDS} s from proctor's clock: sign one for "
                            "each request, when it is sent")
    if request is None or request.body is None:
        raise IdentityError("proof_wrong_request", "an own-key identity proof is taken only "
                            "by the API request it was signed for")
    if not isinstance(htm, str) or htm != request.method or not isinstance(htu, str) \
            or request_target(htu) != request_target(request.url):
        raise IdentityError("proof_wrong_request", "the proof was signed for another method "
                            "or URL")
    bh = claims.get("bh", _EMPTY_BODY)
    if not isinstance(bh, str) or not hmac.compare_digest(bh, body_hash(request.body)):
        raise IdentityError("proof_wrong_request", "the proof was signed over another body")
    return ProofUse(iat, _nonce(key_thumbprint, jti), key_thumbprint)


def _nonce(key_thumbprint: str, jti: str) -> str:
    """The ``jti`` of one key's identity proof, apart from every other key's and from
    every proof of possession's nonce (to be the same, one would need a preimage of
    SHA-256)."""
    digest = hashlib.sha256(f"own-key identity proof\0{key_thumbprint}\0{jti}".encode())
    return b64url_encode(digest.digest())
