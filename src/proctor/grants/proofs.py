"""Proof of possession for each use of a grant (RFC 9449 DPoP semantics).

The agent signs, with the key the grant is bound to (``cnf.jkt``), a small JWS
over the method, the target, the time, a fresh nonce (``jti``) and the hash of
the grant (``ath``). A stolen grant is useless without the key; a captured
proof is useless twice.

Header: ``{"typ": "dpop+jwt", "alg": "ES256" | "EdDSA", "jwk": <public key>}``.
Payload: ``{"htm": method, "htu": target, "iat": seconds, "jti": nonce, "ath": hash}``.

The proof is parsed and checked here with ``cryptography`` directly, with an
algorithm allow-list tied to the key type: it runs on every call, and the
generic JOSE path costs about three times a raw verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from proctor.documents import parse_json
from proctor.errors import DocumentError, GrantError
from proctor.jose import private_members

__all__ = ["MAX_PROOF_BYTES", "PROOF_WINDOW_SECONDS", "VerifiedProof", "jwk_thumbprint",
           "make_proof", "verify_proof"]

MAX_PROOF_BYTES = 4096
PROOF_WINDOW_SECONDS = 60
_ALG_FOR_KTY = {("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public EC P-256 or Ed25519 JWK."""
    if jwk.get("kty") == "EC":
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    elif jwk.get("kty") == "OKP":
        members = {k: jwk[k] for k in ("crv", "kty", "x")}
    else:
        raise GrantError("proof_invalid", f"key type `{jwk.get('kty')}` is not supported")
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


def public_jwk(key: PrivateKey) -> dict[str, str]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes_raw()
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big"))}


def make_proof(key: PrivateKey, token: str | None, *, method: str, target: str, now: datetime,
               nonce: str | None = None) -> str:
    """What an agent sends with each use of ``token`` (the SDK side); ``token`` None for
    the proof that asks for a grant."""
    jwk = public_jwk(key)
    alg = _ALG_FOR_KTY[(jwk["kty"], jwk["crv"])]
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk}
    payload = {"htm": method, "htu": target, "iat": int(now.timestamp()),
               "jti": nonce or secrets.token_urlsafe(16)}
    if token is not None:
        payload["ath"] = _b64(hashlib.sha256(token.encode()).digest())
    signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64(json.dumps(payload, separators=(",", ":")).encode()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input.encode())
    else:
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input + "." + _b64(signature)


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    nonce: str
    issued_at: int
    key_thumbprint: str


@dataclass(frozen=True, slots=True)
class _ProofKey:
    """A proof header, checked and parsed: the same for every proof of one agent key."""

    thumbprint: str
    key: PublicKey


_ECDSA = ec.ECDSA(hashes.SHA256())
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
        payload = parse_json(_unb64(p64), what="proof payload", max_bytes=MAX_PROOF_BYTES)
        signature = _unb64(s64)
    except (DocumentError, ValueError, TypeError) as exc:
        raise GrantError("proof_invalid", "proof is not a valid compact JWS") from exc
    if not isinstance(payload, dict):
        raise GrantError("proof_invalid", "proof payload is not a JSON object")
    header = _header(h64)
    if key_thumbprint is not None and header.thumbprint != key_thumbprint:
        raise GrantError("proof_wrong_key", "proof is not signed by the key the grant is bound to")
    if not _signature_ok(header.key, (h64 + "." + p64).encode(), signature):
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
        found = _hashes[token] = _b64(hashlib.sha256(token.encode()).digest())
    return found


def _header(h64: str) -> _ProofKey:
    """Parse and check a proof header once; later proofs with the same header reuse it."""
    cached = _headers.get(h64)
    if cached is not None:
        return cached
    try:
        header = parse_json(_unb64(h64), what="proof header", max_bytes=MAX_PROOF_BYTES)
        jwk, alg = header["jwk"], header["alg"]
    except (DocumentError, ValueError, KeyError, TypeError) as exc:
        raise GrantError("proof_invalid", "proof header is not valid") from exc
    if header.get("typ") != "dpop+jwt" or not isinstance(jwk, dict):
        raise GrantError("proof_invalid", "proof header is not valid")
    if private_members(jwk):  # RFC 9449 §4.3: the key's private part was disclosed
        raise GrantError("proof_key_private", "the proof's `jwk` holds private key material: "
                         "a proof carries the public key only, and this key must be replaced")
    if _ALG_FOR_KTY.get((str(jwk.get("kty")), str(jwk.get("crv")))) != alg:
        raise GrantError("proof_invalid", f"proof algorithm `{alg}` does not fit its key")
    try:
        parsed = _ProofKey(jwk_thumbprint(jwk), _load_public(jwk))
    except (KeyError, TypeError, ValueError) as exc:
        raise GrantError("proof_invalid", "proof key is not a valid public key") from exc
    if len(_headers) >= _MAX_CACHED_HEADERS:
        _headers.clear()
    _headers[h64] = parsed
    return parsed


def _signature_ok(key: PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return True
        if len(signature) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                   int.from_bytes(signature[32:], "big"))
        key.verify(der, data, _ECDSA)
    except InvalidSignature:
        return False
    return True


def _load_public(jwk: dict[str, Any]) -> PublicKey:
    if jwk["kty"] == "OKP":
        return ed25519.Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"]))
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(_unb64(jwk["x"]), "big"),
                                            int.from_bytes(_unb64(jwk["y"]), "big"),
                                            ec.SECP256R1())
    return numbers.public_key()
