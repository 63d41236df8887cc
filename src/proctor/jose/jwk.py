"""JWKs (RFC 7517): private members, RFC 7638 thumbprints, agents' P-256 and Ed25519 keys.

One definition of what makes a JWK private, so a key that carries secrets is
refused the same way wherever proctor reads one: an agent's registration, a
trust bundle, a proof of possession. One thumbprint, so a key has the same id
as a grant's ``cnf``, an agent's registration and an issuer's ``kid``.

The keys agents hold and proctor signs with are P-256 (``ES256``) and Ed25519.
Ed25519 signatures have two names: ``Ed25519`` (RFC 9864) and ``EdDSA``, the
older one RFC 9864 deprecates for not naming the curve. Both are accepted
wherever an Ed25519 key is, because the key pins the curve; proctor writes
``Ed25519`` (:data:`ED25519`).

A JWK's coordinates must have their full length (RFC 7518 §6.2.1.2) and be
below the field prime: with a leading zero byte, or the prime added, the same
point would have a second thumbprint. An Ed25519 key must not be of small order
(the neutral point, and the seven others whose multiple by 8 is it): for such a key
``[s]B = R + [h]A`` holds for signatures no private key made (the neutral point
verifies ``R`` = itself, ``s`` = 0 on any message), and OpenSSL, like RFC 8032,
does not refuse it; libsodium's list of them is the one used here.

>>> thumbprint({"kty": "OKP", "crv": "Ed25519",
...             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k'
>>> algorithms_for({"kty": "OKP", "crv": "Ed25519"})
('Ed25519', 'EdDSA')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proctor.jose.base64url import b64url_decode, b64url_encode

__all__ = ["ALGORITHMS_BY_KEY", "ED25519", "PRIVATE_MEMBERS", "PrivateKey", "PublicKey",
           "algorithms_for", "load_public_jwk", "private_members", "public_jwk", "thumbprint"]

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# RFC 7518 §6.2.2 (EC, OKP: "d"), §6.3.2 (RSA) and §6.4 (symmetric "k").
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
ED25519 = "Ed25519"
# (kty, crv) -> the JWS algorithms a key of that type signs with, the written one first
ALGORITHMS_BY_KEY: dict[tuple[str, str], tuple[str, ...]] = {
    ("EC", "P-256"): ("ES256",),
    ("OKP", "Ed25519"): (ED25519, "EdDSA"),
}
# RFC 7638 §3.2: the members a thumbprint covers, for each key type
_REQUIRED = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"),
             "RSA": ("e", "kty", "n"), "oct": ("k", "kty")}
_P256_BYTES = 32
_ED25519_PRIME = 2**255 - 19
_ED25519_SIGN = 1 << 255
# The y coordinates of Ed25519's eight points of small order (libsodium's blocklist,
# the sign of x aside): 1 (the neutral point), p - 1 (order 2), 0 (order 4), and the
# two of the points of order 8.
_SMALL_ORDER_Y = frozenset({0, 1, _ED25519_PRIME - 1, *(
    int.from_bytes(bytes.fromhex(encoded), "little") & (_ED25519_SIGN - 1) for encoded in (
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))})


def private_members(jwk: Mapping[str, Any]) -> list[str]:
    """The private or symmetric members ``jwk`` carries, sorted; empty for a public key.

    >>> private_members({"kty": "EC", "crv": "P-256", "x": "…", "y": "…", "d": "…"})
    ['d']
    """
    return sorted(PRIVATE_MEMBERS & set(jwk))


def algorithms_for(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    """The algorithms a P-256 or Ed25519 ``jwk`` signs with; empty for any other key."""
    return ALGORITHMS_BY_KEY.get((str(jwk.get("kty")), str(jwk.get("crv"))), ())


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of ``jwk``, base64url; :class:`ValueError` for a
    key type without one (EC, OKP, RSA and oct have one) or a required member missing."""
    kty = jwk.get("kty")
    members = _REQUIRED.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError(f"key type `{str(kty)[:20]}` has no thumbprint")
    if not all(isinstance(jwk.get(m), str) for m in members):
        raise ValueError(f"a {kty} key needs the members {', '.join(members)}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"),
                           sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: PublicKey | PrivateKey) -> dict[str, str]:
    """The public JWK of a P-256 or Ed25519 key: its RFC 7638 members only."""
    public = key.public_key() if isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) else key
    if isinstance(public, ed25519.Ed25519PublicKey):
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(public.public_bytes_raw())}
    if not isinstance(public.curve, ec.SECP256R1):
        raise ValueError(f"curve `{public.curve.name}` is not P-256")
    numbers = public.public_numbers()
    return {"kty": "EC", "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(_P256_BYTES, "big")),
            "y": b64url_encode(numbers.y.to_bytes(_P256_BYTES, "big"))}


def load_public_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """The key of a public P-256 or Ed25519 ``jwk``; :class:`ValueError` for another key
    type, a coordinate that is not canonical base64url of its full length, a point
    that is not on the curve, or an Ed25519 point of small order."""
    kind = (jwk.get("kty"), jwk.get("crv"))
    if kind == ("OKP", "Ed25519"):
        encoded = _coordinate(jwk, "x")
        y = int.from_bytes(encoded, "little") & (_ED25519_SIGN - 1)
        if y >= _ED25519_PRIME:  # y + p names the point y does
            raise ValueError("the point's y is not below the field prime")
        if y in _SMALL_ORDER_Y:
            raise ValueError("the point is of small order: it would verify signatures "
                             "no private key made")
        return ed25519.Ed25519PublicKey.from_public_bytes(encoded)
    if kind == ("EC", "P-256"):
        x, y = (int.from_bytes(_coordinate(jwk, m), "big") for m in ("x", "y"))
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        numbers = key.public_numbers()
        if (numbers.x, numbers.y) != (x, y):  # x + p names the point x does
            raise ValueError("a coordinate is not below the field prime")
        return key
    raise ValueError(f"key type `{str(kind[0])[:20]}` with curve `{str(kind[1])[:20]}` is not "
                     "P-256 or Ed25519")


def _coordinate(jwk: Mapping[str, Any], member: str) -> bytes:
    value = jwk.get(member)
    if not isinstance(value, str):
        raise ValueError(f"member `{member}` is missing")
    raw = b64url_decode(value)
    if len(raw) != _P256_BYTES:  # an Ed25519 key is 32 bytes too
        raise ValueError(f"member `{member}` is not {_P256_BYTES} bytes")
    return raw
