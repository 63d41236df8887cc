"""Proofs of possession as RFC 9449 (DPoP) writes them: what the agent signs per use.

One writer for the SDK (:meth:`proctor.client.AgentKey.call_proof`) and the server's
own callers (:func:`proctor.grants.make_proof`): a ``dpop+jwt`` header carrying the
public key, and ``{"htm", "htu", "iat", "jti", "ath"}``, in that order and compact
(the shape :func:`proctor.grants.verify_proof` reads fastest; any other is read too).

An agent's own-key identity proof names its request with the same claims
(``htm``, ``htu``, ``iat``, ``jti``) and the body's hash (``bh``,
:func:`body_hash`); :func:`request_target` is how both sides write ``htu``.

>>> from cryptography.hazmat.primitives.asymmetric import ed25519
>>> from datetime import UTC, datetime
>>> proof = write_proof(ed25519.Ed25519PrivateKey.generate(), "a.b.c", method="tools/call",
...                     target="git/git_log", now=datetime(2026, 12, 7, tzinfo=UTC))
>>> proof.count(".")
2
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from proctor.jose.base64url import b64url_encode
from proctor.jose.jwk import PrivateKey, public_jwk
from proctor.jose.jws import write_compact

__all__ = ["PROOF_TYPE", "PROOF_WINDOW_SECONDS", "body_hash", "fresh_nonce", "grant_hash",
           "request_target", "write_proof"]

PROOF_TYPE = "dpop+jwt"
# how far a single-use proof's ``iat`` may be from the clock that checks it, either way;
# a used nonce is kept for as long (proctor.grants.accounting.nonce_kept_until), so the
# proofs of possession and the own-key identity proofs that share its table share it
PROOF_WINDOW_SECONDS = 60
_DEFAULT_PORTS = {"http": 80, "https": 443}

# a process's proofs, counted: see fresh_nonce
_PROOFS_MADE = itertools.count()


def fresh_nonce() -> str:
    """A proof's nonce: this process's count of proofs made (8 hex digits), then 96 random
    bits. The store keeps a used proof under its time then its nonce
    (:func:`proctor.grants.accounting.nonce_key`): proofs made one after the other are
    kept side by side, and a batch of them writes a leaf of that b-tree rather than a
    leaf each. Any nonce does for the check; the count is not a secret (the random bits
    make it unique)."""
    return f"{next(_PROOFS_MADE) & 0xFFFFFFFF:08x}{secrets.token_urlsafe(12)}"


def grant_hash(token: str) -> str:
    """``ath``: the base64url SHA-256 of the grant a proof is for."""
    return b64url_encode(hashlib.sha256(token.encode()).digest())


def body_hash(body: bytes) -> str:
    """``bh``: the base64url SHA-256 of a request's body, as its bytes were sent."""
    return b64url_encode(hashlib.sha256(body).digest())


def request_target(url: str) -> str:
    """``htu`` as a request-bound proof names a URL, and as it is compared: RFC 9449 §4.3,
    without query and fragment, the scheme and host in lower case and the scheme's
    default port left out (RFC 3986 §6.2.2-6.2.3); an empty path is ``/``. The path is
    kept as it is given (both sides give it decoded).

    >>> request_target("HTTPS://Proctor.Example:443/v1/tasks?x=1")
    'https://proctor.example/v1/tasks'
    """
    scheme, netloc, path, _, _ = urlsplit(url)
    scheme = scheme.lower()
    host, colon, port = netloc.rpartition(":")
    if not colon or "]" in port:  # no port (an IPv6 literal's colons are not one)
        host, port = netloc, ""
    if port == str(_DEFAULT_PORTS.get(scheme)):
        port = ""
    return f"{scheme}://{host.lower()}{':' + port if port else ''}{path or '/'}"


def write_proof(key: PrivateKey, token: str | None, *, method: str, target: str,
                now: datetime, nonce: str | None = None) -> str:
    """A single-use proof for one use of ``token`` (None: the proof that asks for a grant),
    signed by ``key`` (``ES256`` or ``Ed25519``, the key's)."""
    payload: dict[str, object] = {"htm": method, "htu": target, "iat": int(now.timestamp()),
                                  "jti": nonce or fresh_nonce()}
    if token is not None:
        payload["ath"] = grant_hash(token)
    return write_compact({"typ": PROOF_TYPE, "jwk": public_jwk(key)}, payload, key)
