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

import re
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
    decode_json_part,
    load_public_jwk,
    private_members,
    public_jwk,
    thumbprint,
    verifier,
)
from proctor.jose.dpop import (
    PROOF_TYPE,
    PROOF_WINDOW_SECONDS,
    fresh_nonce,
    grant_hash,
    write_proof,
)

__all__ = ["MAX_PROOF_BYTES", "PROOF_ALGORITHMS", "PROOF_WINDOW_SECONDS", "PrivateKey",
           "VerifiedProof",
           "fresh_nonce", "jwk_thumbprint", "make_proof", "public_jwk", "verify_proof"]

MAX_PROOF_BYTES = 4096
# every name of every algorithm an agent key signs with: ES256, Ed25519, EdDSA
PROOF_ALGORITHMS = tuple(alg for algs in ALGORITHMS_BY_KEY.values() for alg in algs)


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (:func:`proctor.jose.thumbprint`)."""
    try:
        return thumbprint(jwk)
    except ValueError as exc:
        raise GrantError("proof_invalid", f"the key has no thumbprint: {exc}") from None


def make_proof(key: PrivateKey, token: str | None, *, method: str, target: str, now: datetime,
               nonce: str | None = None) -> str:
    """What an agent sends with each use of ``token`` (the SDK side); ``token`` None for
    the proof that asks for a grant (:func:`proctor.jose.dpop.write_proof`)."""
    return write_proof(key, token, method=method, target=target, now=now, nonce=nonce)


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
        payload = _payload(p64)
        signature = b64url_decode(s64)
    except (DocumentError, ValueError) as exc:
        raise GrantError("proof_invalid", "proof is not a valid compact JWS") from exc
    header = _header(h64)
    if key_thumbprint is not None and header.thumbprint != key_thumbprint:
        raise GrantError("proof_wrong_key", "proof is not signed by the key the grant is bound to")
    if not header.verify(proof[:len(h64) + 1 + len(p64)].encode("ascii"), signature):
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


# A payload as proctor's SDK writes it (make_proof, AgentKey.call_proof): compact, these
# members in this order, strings without an escape or a control character, iat an integer
# of at most 18 digits. Such text reads the same with this expression as with the JSON
# parser, with no repeated key and no nesting to look for; any other (another client's
# spacing or order, an escape, a member more, anything malformed) is read by the strict
# parser, which refuses what it must (tests/grants/test_proof_payloads.py: the two agree).
_STRING = r'"([^"\\\x00-\x1f]*)"'
_SDK_PAYLOAD = re.compile(rf'\{{"htm":{_STRING},"htu":{_STRING},"iat":(-?(?:0|[1-9][0-9]{{0,17}})),'
                          rf'"jti":{_STRING}(?:,"ath":{_STRING})?\}}')


def _payload(p64: str) -> dict[str, Any]:
    """The JSON object a proof's payload part holds (:func:`~proctor.jose.decode_json_part`,
    which it reads as, without the parser's work for a payload the SDK wrote);
    :class:`~proctor.errors.DocumentError` or :class:`ValueError` if it holds none."""
    try:
        text = b64url_decode(p64).decode("utf-8")
    except ValueError:
        text = ""  # the strict reader says why
    shape = _SDK_PAYLOAD.fullmatch(text)
    if shape is None:
        return decode_json_part(p64, what="proof payload", max_bytes=MAX_PROOF_BYTES)
    htm, htu, iat, jti, ath = shape.groups()
    payload: dict[str, Any] = {"htm": htm, "htu": htu, "iat": int(iat), "jti": jti}
    if ath is not None:
        payload["ath"] = ath
    return payload


_hashes: dict[str, str] = {}


def _token_hash(token: str) -> str:
    """``ath`` of a grant: computed once per grant, since every use of it checks it."""
    found = _hashes.get(token)
    if found is None:
        if len(_hashes) >= _MAX_CACHED_HEADERS:
            _hashes.clear()
        found = _hashes[token] = grant_hash(token)
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
    if header.get("typ") != PROOF_TYPE or not isinstance(jwk, dict) or "crit" in header:
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
