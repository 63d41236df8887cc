"""JWK thumbprints (RFC 7638) and agents' P-256 and Ed25519 keys as JWKs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import ECKey, OKPKey, RSAKey

from proctor.jose import (
    algorithms_for,
    b64url_decode,
    b64url_encode,
    load_public_jwk,
    private_members,
    public_jwk,
    thumbprint,
    verify_signature,
)

# RFC 7638 §3.1
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
         "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
         "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
         "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
# RFC 8037 Appendix A.3
RFC8037_KEY = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1


def test_the_thumbprint_of_rfc_7638s_own_example_is_the_one_it_gives() -> None:
    assert thumbprint(RFC7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_thumbprint_of_rfc_8037s_ed25519_example_is_the_one_it_gives() -> None:
    assert thumbprint(RFC8037_KEY) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_members_outside_rfc_7638s_list_and_their_order_do_not_change_a_thumbprint() -> None:
    reordered = dict(reversed(list(RFC7638_KEY.items())))
    assert thumbprint({**reordered, "use": "sig", "x5t": "abc"}) == thumbprint(RFC7638_KEY)


# the keys made by the test, not when the module is collected (an RSA key: ~0.1 s of CPU)
@pytest.mark.parametrize("make_key", [lambda: ECKey.generate_key("P-256"),
                                      lambda: ECKey.generate_key("P-384"),
                                      lambda: OKPKey.generate_key("Ed25519"),
                                      lambda: RSAKey.generate_key(2048)],
                         ids=["p256", "p384", "ed25519", "rsa"])
def test_thumbprints_agree_with_joserfcs(make_key: Callable[[], ECKey | OKPKey | RSAKey]) -> None:
    key = make_key()
    assert thumbprint(dict(key.as_dict(private=False))) == key.thumbprint()


@pytest.mark.parametrize("jwk", [{}, {"kty": "XYZ"}, {"kty": ["EC"]}, {"kty": "EC", "crv": "P-256"},
                                 {"kty": "OKP", "crv": "Ed25519", "x": 5}])
def test_a_key_without_a_thumbprint_is_a_value_error(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        thumbprint(jwk)


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP256R1()),
                                 ed25519.Ed25519PrivateKey.generate()], ids=["p256", "ed25519"])
def test_a_public_jwk_loads_back_to_the_same_key_with_joserfcs_thumbprint(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> None:
    jwk = public_jwk(key)
    assert private_members(jwk) == []
    loaded = load_public_jwk(jwk)
    assert public_jwk(loaded) == jwk
    members: dict[str, str | list[str]] = dict(jwk)
    joserfc = ECKey.import_key(members) if jwk["kty"] == "EC" else OKPKey.import_key(members)
    assert thumbprint(jwk) == joserfc.thumbprint()


def test_ed25519_keys_sign_under_both_names_and_p256_keys_under_es256() -> None:
    assert algorithms_for(RFC8037_KEY) == ("Ed25519", "EdDSA")
    assert algorithms_for(public_jwk(ec.generate_private_key(ec.SECP256R1()))) == ("ES256",)
    assert algorithms_for(RFC7638_KEY) == ()
    assert algorithms_for({"kty": "OKP", "crv": "X25519"}) == ()


def _point_with_a_small_x() -> tuple[int, int]:
    """A point of P-256 whose x + p still fits in 32 bytes."""
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    for x in range(1, 100):
        rhs = (x**3 - 3 * x + b) % P256_PRIME
        y = pow(rhs, (P256_PRIME + 1) // 4, P256_PRIME)
        if y * y % P256_PRIME == rhs:
            return x, y
    raise AssertionError("no point found")


def test_one_point_has_one_spelling_so_one_key_has_one_thumbprint() -> None:
    jwk = public_jwk(ec.generate_private_key(ec.SECP256R1()))
    x = b64url_decode(jwk["x"])
    padded = {**jwk, "x": b64url_encode(b"\x00" + x)}
    short = {**jwk, "x": b64url_encode(x[1:])}
    px, py = _point_with_a_small_x()
    small = {"kty": "EC", "crv": "P-256", "x": b64url_encode(px.to_bytes(32, "big")),
             "y": b64url_encode(py.to_bytes(32, "big"))}
    load_public_jwk(small)
    beyond_prime = {**small, "x": b64url_encode((px + P256_PRIME).to_bytes(32, "big"))}
    for respelled in (padded, short, beyond_prime, {**jwk, "x": jwk["x"] + "="}):
        with pytest.raises(ValueError):
            load_public_jwk(respelled)


@pytest.mark.parametrize("jwk", [
    {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
    {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    {"kty": "OKP", "crv": "X25519", "x": RFC8037_KEY["x"]},
    {"kty": "EC", "crv": "P-256", "x": RFC8037_KEY["x"], "y": RFC8037_KEY["x"]},  # off the curve
    {"kty": "OKP", "crv": "Ed25519"},
])
def test_anything_but_a_public_p256_or_ed25519_key_does_not_load(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        load_public_jwk(jwk)


_ED25519_P = 2**255 - 19
# Ed25519's points of small order as libsodium lists them (and the neutral point and the
# point of order 4 spelt with y + p): each loaded, and a signature no key made verified
# with each, for some message (the neutral point for every one). Found by review.
_SMALL_ORDER = [
    bytes([1]) + bytes(31), (_ED25519_P - 1).to_bytes(32, "little"), bytes(32),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    _ED25519_P.to_bytes(32, "little"), (_ED25519_P + 1).to_bytes(32, "little"),
]


@pytest.mark.parametrize("sign", [0, 0x80])
@pytest.mark.parametrize("encoded", _SMALL_ORDER, ids=lambda e: e.hex()[:8])
def test_an_ed25519_key_of_small_order_does_not_load(encoded: bytes, sign: int) -> None:
    spelt = encoded[:31] + bytes([encoded[31] | sign])
    with pytest.raises(ValueError):
        load_public_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(spelt)})


def test_the_neutral_point_verifies_a_signature_no_key_made_which_is_why() -> None:
    neutral = bytes([1]) + bytes(31)
    key = ed25519.Ed25519PublicKey.from_public_bytes(neutral)
    assert verify_signature("Ed25519", key, b"any message", neutral + bytes(32))
