"""Compact JWS (RFC 7515): reading one before its signature is checked, signing, verifying.

:func:`read_compact` reads a JWT (a compact JWS whose payload is a JSON object)
without verifying it, bounded, in this order: the size (``max_bytes``), three
parts, each of header and payload canonical base64url and a JSON object parsed
through :mod:`proctor.documents` (which caps size and nesting), and no ``crit``
header (proctor understands no extension, so RFC 7515 §4.1.11 says refuse).
Any failure is a :class:`~proctor.errors.DocumentError` whose code says which
(``document_too_large``, ``document_too_deep``, ``document_malformed``); each
caller turns it into its own code. Nothing read is trusted until a signature
over :attr:`UnverifiedJws.signing_input` is checked.

Signatures (RFC 7518 §3, RFC 8037, RFC 9864): ``ES256``/``ES384``/``ES512`` as the
raw ``r || s`` JOSE uses, not DER; ``RS*`` (PKCS #1 v1.5) and ``PS*`` (PSS, salt as
long as the hash) with RSA keys of 2048 bits or more; ``Ed25519`` and its older
name ``EdDSA``. :func:`key_fits` says whether an algorithm fits a key, so a token's
``alg`` can never choose how a key is read. Proctor itself signs with P-256
(``ES256``) and Ed25519 keys (:func:`sign`, :func:`write_compact`).

>>> from cryptography.hazmat.primitives.asymmetric import ed25519
>>> key = ed25519.Ed25519PrivateKey.generate()
>>> token = write_compact({"typ": "JWT"}, {"sub": "a"}, key)
>>> jws = read_compact(token, max_bytes=4096, what="the token")
>>> (jws.header["alg"], jws.claims["sub"])
('Ed25519', 'a')
>>> verify_signature("EdDSA", key.public_key(), jws.signing_input, jws.signature_bytes())
True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from proctor.documents import check_json_text, parse_json
from proctor.errors import DocumentError
from proctor.jose.base64url import b64url_decode, b64url_encode
from proctor.jose.jwk import ED25519, PrivateKey

__all__ = ["MIN_RSA_BITS", "UnverifiedJws", "decode_json_part", "key_fits", "read_compact",
           "sign", "signing_algorithm", "verifier", "verify_signature", "write_compact"]

MIN_RSA_BITS = 2048
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_ED25519_NAMES = frozenset({ED25519, "EdDSA"})
_RSA = frozenset({f"{kind}{bits}" for kind in ("RS", "PS") for bits in _HASHES})
_P256_ECDSA = ec.ECDSA(hashes.SHA256())

Verify = Callable[[bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class UnverifiedJws:
    """A compact JWS as written: header and claims parsed, the signature not checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: str  # base64url, as written

    def signature_bytes(self) -> bytes:
        """The signature; :class:`ValueError` if it is not canonical base64url."""
        return b64url_decode(self.signature)


def read_compact(token: object, *, max_bytes: int, what: str) -> UnverifiedJws:
    """``token``'s header and claims, unverified; ``what`` names it in errors."""
    if not isinstance(token, str):
        raise DocumentError("document_malformed", f"{what} is not a compact JWS string")
    if len(token) > max_bytes:
        raise DocumentError("document_too_large", f"{what} is larger than {max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise DocumentError("document_malformed",
                            f"{what} is not a compact JWS (three parts separated by dots)")
    header = decode_json_part(parts[0], what=f"{what}'s header", max_bytes=max_bytes)
    claims = decode_json_part(parts[1], what=f"{what}'s payload", max_bytes=max_bytes)
    if "crit" in header:
        raise DocumentError("document_malformed", f"{what} names a critical extension (`crit`)")
    return UnverifiedJws(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), parts[2])


def decode_json_part(part: str, *, what: str, max_bytes: int) -> dict[str, Any]:
    """The JSON object one base64url part of a JWS holds; :class:`DocumentError` if not."""
    try:
        raw = b64url_decode(part)
    except ValueError:
        raise DocumentError("document_malformed", f"{what} is not base64url") from None
    try:
        text = raw.decode("utf-8")  # RFC 7515: UTF-8; as text, parsing skips a detection
    except UnicodeDecodeError:
        raise DocumentError("document_malformed", f"{what} is not UTF-8") from None
    value = parse_json(text, what=what, max_bytes=max_bytes)
    # a lone surrogate (valid JSON, no Unicode text) would reach the refusals that name a
    # header's or a claim's value, and no answer or audit event could carry them
    check_json_text(text, what=what)
    if not isinstance(value, dict):
        raise DocumentError("document_malformed", f"{what} is not a JSON object")
    return value


def key_fits(alg: str, key: object) -> bool:
    """Whether ``alg`` is a signature algorithm of ``key`` (a public key of ``cryptography``)."""
    if alg in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve,
                                                                         _CURVES[alg])
    if alg in _RSA:
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    return alg in _ED25519_NAMES and isinstance(key, ed25519.Ed25519PublicKey)


def verifier(alg: str, key: object) -> Verify:
    """A function ``(data, signature) -> bool`` for ``alg`` with ``key``, which must fit it
    (:func:`key_fits`; :class:`ValueError` otherwise). It never raises for a bad signature."""
    if not key_fits(alg, key):
        raise ValueError(f"algorithm `{alg[:20]}` does not fit the key")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _checked(lambda data, signature: key.verify(signature, data))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _ecdsa_verifier(key, alg)
    assert isinstance(key, rsa.RSAPublicKey)  # key_fits said so
    digest = _HASHES[alg[2:]]()
    scheme = padding.PKCS1v15() if alg.startswith("RS") else padding.PSS(
        mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return _checked(lambda data, signature: key.verify(signature, data, scheme, digest))


def verify_signature(alg: str, key: object, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s ``alg`` signature of ``data``; False when ``alg``
    does not fit ``key``."""
    return key_fits(alg, key) and verifier(alg, key)(data, signature)


def _ecdsa_verifier(key: ec.EllipticCurvePublicKey, alg: str) -> Verify:
    """ES256 runs on every proof of possession: one call, no wrapper."""
    size = (key.curve.key_size + 7) // 8
    algorithm = _P256_ECDSA if size == 32 else ec.ECDSA(_HASHES[alg[2:]]())

    def verify(data: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * size:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                   int.from_bytes(signature[size:], "big"))
        try:
            key.verify(der, data, algorithm)
        except InvalidSignature:
            return False
        return True
    return verify


def _checked(check: Callable[[bytes, bytes], None]) -> Verify:
    def verify(data: bytes, signature: bytes) -> bool:
        try:
            check(data, signature)
        except InvalidSignature:
            return False
        return True
    return verify


def signing_algorithm(key: PrivateKey) -> str:
    """The algorithm proctor writes for ``key``: ``ES256`` (P-256) or ``Ed25519``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return ED25519
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"curve `{key.curve.name}` is not P-256")
    return "ES256"


def sign(key: PrivateKey, data: bytes) -> bytes:
    """``key``'s JWS signature of ``data``: Ed25519, or ES256 as ``r || s``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    signing_algorithm(key)  # P-256 only
    r, s = decode_dss_signature(key.sign(data, _P256_ECDSA))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def write_compact(header: Mapping[str, Any], claims: Mapping[str, Any], key: PrivateKey) -> str:
    """A compact JWS of ``claims`` signed by ``key``; ``alg`` is set from the key."""
    signing_input = ".".join(
        b64url_encode(json.dumps(part, separators=(",", ":")).encode("utf-8"))
        for part in ({**header, "alg": signing_algorithm(key)}, claims))
    return signing_input + "." + b64url_encode(sign(key, signing_input.encode("ascii")))
