"""Proof of possession for each use of a grant (RFC 9449 DPoP semantics).

The agent signs, with the key the grant is bound to (``cnf.jkt``), a small JWS
over the method, the target, the time, a fresh nonce (``jti``) and the hash of
the grant (``ath``). A stolen grant is useless without the key; a captured
proof is useless twice.

Header: ``{"typ": "dpop+jwt", "alg": "ES256" | "Ed25519" | "EdDSA", "jwk": <public key>}``
(``EdDSA`` is the older name of ``Ed25519``, RFC 9864; proctor writes ``Ed25519``).
Payload: ``{"htm": method, "htu": target, "iat": seconds, "jti": nonce, "ath": hash}``.

The proof is parsed and checked with :mod:`proctor.jose` and ``cryptography``
directly, with the algorithms its key type signs with: it runs on every call,
and a generic JOSE library costs about three times a raw verify. A header (key,
thumbprint, algorithm) is checked once and cached by its encoded form.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proctor.errors import DocumentError, GrantError
from proctor.jose import (
    ALGORITHMS_BY_KEY,
    PrivateKey,
    algorithms_for,
    b64url_decode,
    b64url_encode,
    decode_json_part,
    load_public_jwk,
    private_members,
    public_jwk,
    thumbprint,
    verifier,
    write_compact,
)

__all__ = ["MAX_PROOF_BYTES", "PROOF_ALGORITHMS", "PROOF_WINDOW_SECONDS", "PrivateKey",
           "VerifiedProof",
           "fresh_nonce", "jwk_thumbprint", "make_proof", "public_jwk", "verify_proof"]

MAX_PROOF_BYTES = 4096
PROOF_WINDOW_SECONDS = 60
# every name of every algorithm an agent key signs with: ES256, Ed25519, EdDSA
PROOF_ALGORITHMS = tuple(alg for algs in ALGORITHMS_BY_KEY.values() for alg in algs)


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (:func:`proctor.jose.thumbprint`)."""
    try:
        return thumbprint(jwk)
    except ValueError as exc:
        raise GrantError("proof_invalid", f"the key has no thumbprint: {exc}") from None


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


def make_proof(key: PrivateKey, token: str | None, *, method: str, target: str, now: datetime,
               nonce: str | None = None) -> str:
    """What an agent sends with each use of ``token`` (the SDK side); ``token`` None for
    the proof that asks for a grant. The algorithm is the key's: ``ES256`` or ``Ed25519``."""
    payload: dict[str, object] = {"htm": method, "htu": target, "iat": int(now.timestamp()),
                                  "jti": nonce or fresh_nonce()}
    if token is not None:
        payload["ath"] = _token_hash(token)
    return write_compact({"typ": "dpop+jwt", "jwk": public_jwk(key)}, payload, key)


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    nonce: str
    issued_at: int
    key_thumbprint: str


@dataclass(frozen=True, slots=True)
class _ProofKey:
    """A proof header, checked and parsed: the same for every proof of one agent key."""

    thumbprint: str
    verify: Callable[[bytes, bytes], bool]


_MAX_CACHED_HEADERS = 10_000
_headers: dict[str, _ProofKey] = {}


def verify_proof(proof: str, *, token: str | None, key_thumbprint: str | None, method: str,
                 target: str, now: datetime) -> VerifiedProof:
    """Check ``proof`` for one use of ``token``; the nonce is checked for replay by the caller.

    ``key_thumbprint`` None accepts the key in the proof's header (the proof at
    issuance, which establishes the key a grant will be bound to); ``token`` None
    means no grant exists yet, so there is no grant hash to check.
    Raises :class:`GrantError` with a ``proof_*`` code.
    """
    if not proof:
        raise GrantError("proof_missing", "a proof of possession is required")
    if len(proof) > MAX_PROOF_BYTES:
        raise GrantError("proof_invalid", f"proof is over {MAX_PROOF_BYTES} bytes")
    try:
        h64, p64, s64 = proof.split(".")
        payload = decode_json_part(p64, what="proof payload", max_bytes=MAX_PROOF_BYTES)
        signature = b64url_decode(s64)
    except (DocumentError, ValueError) as exc:
        raise GrantError("proof_invalid", "proof is not a valid compact JWS") from exc
    header = _header(h64)
    if key_thumbprint is not None and header.thumbprint != key_thumbprint:
        raise GrantError("proof_wrong_key", "proof is not signed by the key the grant is bound to")
    if not header.verify(f"{h64}.{p64}".encode("ascii"), signature):
        raise GrantError("proof_invalid", "proof signature is not valid")
    if payload.get("htm") != method or payload.get("htu") != target:
        raise GrantError("proof_wrong_target", "proof was made for another call")
    if token is not None and payload.get("ath") != _token_hash(token):
        raise GrantError("proof_wrong_target", "proof was made for another grant")
    iat, nonce = payload.get("iat"), payload.get("jti")
    if not isinstance(iat, int) or abs(int(now.timestamp()) - iat) > PROOF_WINDOW_SECONDS:
        raise GrantError("proof_stale", "proof is too old or from the future")
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
        raise GrantError("proof_invalid", "proof nonce is missing or malformed")
    return VerifiedProof(nonce, iat, header.thumbprint)


_hashes: dict[str, str] = {}


def _token_hash(token: str) -> str:
    """``ath`` of a grant: computed once per grant, since every use of it checks it."""
    found = _hashes.get(token)
    if found is None:
        if len(_hashes) >= _MAX_CACHED_HEADERS:
            _hashes.clear()
        found = _hashes[token] = b64url_encode(hashlib.sha256(token.encode()).digest())
    return found


def _header(h64: str) -> _ProofKey:
    """Parse and check a proof header once; later proofs with the same header reuse it."""
    cached = _headers.get(h64)
    if cached is not None:
        return cached
    try:
        header = decode_json_part(h64, what="proof header", max_bytes=MAX_PROOF_BYTES)
    except DocumentError as exc:
        raise GrantError("proof_invalid", "proof header is not valid") from exc
    jwk, alg = header.get("jwk"), header.get("alg")
    if header.get("typ") != "dpop+jwt" or not isinstance(jwk, dict) or "crit" in header:
        raise GrantError("proof_invalid", "proof header is not valid")
    if private_members(jwk):  # RFC 9449 §4.3: the key's private part was disclosed
        raise GrantError("proof_key_private", "the proof's `jwk` holds private key material: "
                         "a proof carries the public key only, and this key must be replaced")
    if not isinstance(alg, str) or alg not in algorithms_for(jwk):
        raise GrantError("proof_invalid", f"proof algorithm `{str(alg)[:20]}` does not fit its "
                         "key")
    try:
        parsed = _ProofKey(thumbprint(jwk), verifier(alg, load_public_jwk(jwk)))
    except ValueError as exc:
        raise GrantError("proof_invalid", "proof key is not a valid public key") from exc
    if len(_headers) >= _MAX_CACHED_HEADERS:
        _headers.clear()
    _headers[h64] = parsed
    return parsed
