"""Compact JWS: read before verifying (bounded), and signatures that interoperate."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from proctor.errors import DocumentError
from proctor.jose import (
    b64url_encode,
    key_fits,
    read_compact,
    sign,
    verify_signature,
    write_compact,
)


def _part(value: Any) -> str:
    return b64url_encode(json.dumps(value).encode())


_TWICE_ALG = b64url_encode(b'{"alg": "ES256", "alg": "none"}')
_TWICE_SUB = b64url_encode(b'{"sub": "a", "sub": "b"}')


def _read(token: object, max_bytes: int = 8192) -> str:
    try:
        read_compact(token, max_bytes=max_bytes, what="the token")
    except DocumentError as exc:
        return exc.code
    return "ok"


def test_a_token_is_read_with_its_header_claims_and_signing_input() -> None:
    token = f"{_part({'alg': 'ES256', 'kid': 'k'})}.{_part({'sub': 'a'})}.c2ln"
    jws = read_compact(token, max_bytes=8192, what="the token")
    assert (jws.header, jws.claims) == ({"alg": "ES256", "kid": "k"}, {"sub": "a"})
    assert jws.signing_input == token.rsplit(".", 1)[0].encode()
    assert jws.signature_bytes() == b"sig"


def test_an_oversized_token_is_refused_before_anything_is_decoded() -> None:
    token = f"{_part({'alg': 'ES256'})}.{_part({'pad': 'x' * 9000})}.c2ln"
    assert _read(token) == "document_too_large"
    assert _read(token, max_bytes=len(token)) == "ok"


@pytest.mark.parametrize("where", ["header", "payload"])
def test_a_deeply_nested_part_is_refused_without_recursing(where: str) -> None:
    nested = b64url_encode(b"[" * 5000 + b"]" * 5000)  # 10 KB of brackets, under 64 KiB
    parts = {"header": _part({"alg": "ES256"}), "payload": _part({"sub": "a"})}
    parts[where] = nested
    assert _read(f"{parts['header']}.{parts['payload']}.c2ln", max_bytes=1 << 16) == (
        "document_too_deep")
    shallow: Any = "x"
    for _ in range(60):
        shallow = [shallow]
    assert _read(f"{_part({'alg': 'ES256', 'x': shallow})}.{_part({'sub': shallow})}.c2ln"
                 ) == "ok"


@pytest.mark.parametrize("token", [
    None, 5, b"a.b.c", "", "abc", "a.b", "a.b.c.d",
    f"{_part({'alg': 'ES256'})}.{_part([1, 2])}.c2ln",         # claims not an object
    f"{_part('ES256')}.{_part({'sub': 'a'})}.c2ln",            # header not an object
    f"{_part({'alg': 'ES256'})}.{_part({'sub': 'a'})}=.c2ln",  # padding
    f"{_part({'alg': 'ES256'})}.not json at all.c2ln",
    f"{b64url_encode(b'{')}.{_part({'sub': 'a'})}.c2ln",
    f"{_part({'alg': 'ES256', 'crit': ['exp']})}.{_part({'sub': 'a'})}.c2ln",
    f"{_part({'alg': 'ES256', 'b64': False, 'crit': ['b64']})}.{_part({'sub': 'a'})}.c2ln",
    f"{_part({'alg': 'ES256'})}.{_part({'sub': 'a'})}\u00e9.c2ln",
    # a member given twice (RFC 7515 lets a reader refuse it; another keeps the first)
    f"{_TWICE_ALG}.{_part({'sub': 'a'})}.c2ln",
    f"{_part({'alg': 'ES256'})}.{_TWICE_SUB}.c2ln",
])
def test_anything_but_a_compact_jws_with_json_objects_is_malformed(token: object) -> None:
    assert _read(token) == "document_malformed"


def test_the_signature_is_read_only_when_asked_for() -> None:
    jws = read_compact(f"{_part({'alg': 'ES256'})}.{_part({'sub': 'a'})}.not base64!",
                       max_bytes=8192, what="the token")
    assert jws.claims == {"sub": "a"}
    with pytest.raises(ValueError):
        jws.signature_bytes()


def _joserfc_signed(alg: str, key: ECKey | OKPKey | RSAKey) -> str:
    with warnings.catch_warnings():  # joserfc warns that "EdDSA" is deprecated
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode({"alg": alg}, {"sub": "a"}, key, algorithms=[alg])


# One RSA key for the four RSA algorithms, made by the first test that needs it: made
# when the module is collected, four 2048-bit keys cost each worker ~0.3 s of CPU.
_rsa_key = functools.cache(lambda: RSAKey.generate_key(2048))


@pytest.mark.parametrize(("alg", "make_key"), [
    ("ES256", lambda: ECKey.generate_key("P-256")), ("ES384", lambda: ECKey.generate_key("P-384")),
    ("ES512", lambda: ECKey.generate_key("P-521")), ("RS256", _rsa_key), ("RS512", _rsa_key),
    ("PS256", _rsa_key), ("PS384", _rsa_key), ("Ed25519", lambda: OKPKey.generate_key("Ed25519")),
    ("EdDSA", lambda: OKPKey.generate_key("Ed25519")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_joserfcs_signatures_verify_and_a_changed_byte_does_not(
    alg: str, make_key: Callable[[], ECKey | OKPKey | RSAKey],
) -> None:
    key = make_key()
    jws = read_compact(_joserfc_signed(alg, key), max_bytes=8192, what="the token")
    public = key.public_key
    assert key_fits(alg, public)
    assert verify_signature(alg, public, jws.signing_input, jws.signature_bytes())
    assert not verify_signature(alg, public, jws.signing_input + b" ", jws.signature_bytes())
    assert not verify_signature(alg, public, jws.signing_input, jws.signature_bytes()[:-1])
    assert not verify_signature(alg, public, jws.signing_input, b"")


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()),
                                 ed25519.Ed25519PrivateKey.generate()], ids=["p256", "ed25519"])
def test_what_proctor_signs_joserfc_verifies(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> None:
    token = write_compact({"typ": "JWT"}, {"sub": "a"}, key)
    alg = read_compact(token, max_bytes=8192, what="the token").header["alg"]
    assert alg == ("Ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256")
    public = (ECKey.import_key(key.public_key()) if isinstance(key, ec.EllipticCurvePrivateKey)
              else OKPKey.import_key(key.public_key()))
    assert jwt.decode(token, public, algorithms=[alg]).claims == {"sub": "a"}
    assert len(sign(key, b"data")) == 64  # ES256 as r || s, not DER


def test_an_algorithm_never_fits_a_key_of_another_type_or_size() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    small_rsa = rsa.generate_private_key(65537, 1024).public_key()  # noqa: S505 (refused)
    rsa_2048 = rsa.generate_private_key(65537, 2048).public_key()
    fits = {(alg, name) for alg in ("ES256", "ES384", "RS256", "PS256", "Ed25519", "EdDSA",
                                    "HS256", "none", "Ed448")
            for name, key in (("p256", p256), ("p384", p384), ("ed", ed),
                              ("rsa1024", small_rsa), ("rsa2048", rsa_2048))
            if key_fits(alg, key)}
    assert fits == {("ES256", "p256"), ("ES384", "p384"), ("RS256", "rsa2048"),
                    ("PS256", "rsa2048"), ("Ed25519", "ed"), ("EdDSA", "ed")}
    assert not verify_signature("ES256", ed, b"data", b"x" * 64)
