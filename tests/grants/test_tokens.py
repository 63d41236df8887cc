"""Grant tokens: signed with joserfc, verifiable with PyJWT, and every forgery refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select

from proctor.errors import ConfigError, GrantError
from proctor.grants import GrantClaims, GrantScope, IssuerKeyring, TokenCodec
from proctor.grants.tokens import MAX_TOKEN_BYTES
from proctor.store.tables import issuer_keys

from .conftest import CODER, ISSUER, Setup


def _claims(setup: Setup, **changes: object) -> GrantClaims:
    now = int(setup.clock.now().timestamp())
    values: dict[str, object] = {
        "grant_id": "grant_1", "agent_id": CODER, "task_id": "task_1", "issuer": ISSUER,
        "audience": "proctor", "issued_at": now, "not_before": now, "expires_at": now + 300,
        "scope": GrantScope.from_json({"tools": [{"tool": "git/*"}]}), "key_thumbprint": "jkt",
        "ancestors": ("grant_0",), "actor_chain": ("spiffe://acme.example/agent/planner",),
    }
    values.update(changes)
    return GrantClaims(**values)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _error(setup: Setup, token: str) -> str:
    with pytest.raises(GrantError) as caught:
        setup.codec.decode(token, now=setup.clock.now())
    return caught.value.code


def test_a_grant_round_trips_with_its_claims(setup: Setup) -> None:
    claims = _claims(setup)
    token = setup.codec.encode(claims)
    assert setup.codec.decode(token, now=setup.clock.now()) == claims
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["act"] == {"sub": "spiffe://acme.example/agent/planner"}
    assert payload["cnf"] == {"jkt": "jkt"}


def test_pyjwt_verifies_a_grant_with_the_published_jwks(setup: Setup) -> None:
    token = setup.codec.encode(_claims(setup))
    [jwk] = setup.keyring.jwks()["keys"]
    key = pyjwt.PyJWK.from_dict(jwk)
    claims = pyjwt.decode(token, key=key, algorithms=["ES256"], audience="proctor",
                          issuer=ISSUER, options={"verify_exp": False, "verify_iat": False,
                                                  "verify_nbf": False})
    assert claims["sub"] == CODER
    assert jwk["alg"] == "ES256"
    assert "d" not in jwk


def test_a_tampered_payload_fails_the_signature(setup: Setup) -> None:
    header, payload, signature = setup.codec.encode(_claims(setup)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = {"tools": [{"tool": "*"}]}
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert _error(setup, forged) == "grant_signature_invalid"


def test_alg_none_is_refused(setup: Setup) -> None:
    token = setup.codec.encode(_claims(setup))
    payload = token.split(".")[1]
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    assert _error(setup, f"{header}.{payload}.") == "grant_algorithm_not_allowed"


def test_hs256_signed_with_the_public_key_is_refused(setup: Setup) -> None:
    token = setup.codec.encode(_claims(setup))
    [jwk] = setup.keyring.jwks()["keys"]
    public_pem = pyjwt.PyJWK.from_dict(jwk).key.public_bytes(
        encoding=Encoding.PEM, format=PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "kid": jwk["kid"]}).encode())
    payload = token.split(".")[1]
    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert _error(setup, f"{header}.{payload}.{_b64(mac)}") == "grant_algorithm_not_allowed"


def test_a_grant_signed_by_a_key_proctor_does_not_hold_is_refused(setup: Setup) -> None:
    ours = setup.keyring.current()
    stranger = ECKey.generate_key("P-256", private=True)
    claims = _claims(setup).as_claims()
    unknown_kid = jwt.encode({"alg": "ES256", "kid": stranger.thumbprint()}, claims, stranger)
    assert _error(setup, unknown_kid) == "grant_unknown_key"
    our_kid = jwt.encode({"alg": "ES256", "kid": ours.kid}, claims, stranger)
    assert _error(setup, our_kid) == "grant_signature_invalid"


def test_stored_keys_cannot_be_used_with_another_master_key(setup: Setup) -> None:
    setup.keyring.current()
    other = IssuerKeyring(setup.store, setup.clock, secrets.token_bytes(32))
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        other.current()


@pytest.mark.parametrize(("changes", "code"), [
    ({"issuer": "https://evil.example"}, "grant_wrong_issuer"),
    ({"audience": "someone-else"}, "grant_wrong_audience"),
])
def test_issuer_and_audience_must_match(setup: Setup, changes: dict[str, object],
                                        code: str) -> None:
    assert _error(setup, setup.codec.encode(_claims(setup, **changes))) == code


def test_expiry_and_not_before_hold_with_a_bounded_leeway(setup: Setup) -> None:
    token = setup.codec.encode(_claims(setup))
    setup.clock.advance(seconds=300 + 29)
    assert setup.codec.decode(token, now=setup.clock.now()).grant_id == "grant_1"
    setup.clock.advance(seconds=1)
    assert _error(setup, token) == "grant_expired"

    now = int(setup.clock.now().timestamp())
    early = setup.codec.encode(_claims(setup, not_before=now + 31, expires_at=now + 600))
    assert _error(setup, early) == "grant_not_yet_valid"


def test_an_oversized_token_is_refused_before_parsing(setup: Setup) -> None:
    assert _error(setup, "a" * (MAX_TOKEN_BYTES + 1)) == "grant_too_large"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "!!!.x.y", "W10.e30.x"])
def test_a_malformed_token_is_refused(setup: Setup, token: str) -> None:
    assert _error(setup, token) == "grant_malformed"


def test_a_rotated_key_verifies_until_its_last_grant_expires(setup: Setup) -> None:
    old_token = setup.codec.encode(_claims(setup, expires_at=int(
        setup.clock.now().timestamp()) + 3000))
    old_kid = setup.keyring.current().kid
    new = setup.keyring.rotate(max_ttl_seconds=600)
    assert new.kid != old_kid
    assert {k["kid"] for k in setup.keyring.jwks()["keys"]} == {old_kid, new.kid}
    fresh = TokenCodec(setup.keyring, issuer=ISSUER, audience="proctor")
    assert fresh.decode(old_token, now=setup.clock.now()).grant_id == "grant_1"
    setup.clock.advance(seconds=601)
    assert [k["kid"] for k in setup.keyring.jwks()["keys"]] == [new.kid]
    with pytest.raises(GrantError) as caught:
        TokenCodec(setup.keyring, issuer=ISSUER, audience="proctor").decode(
            old_token, now=setup.clock.now())
    assert caught.value.code == "grant_unknown_key"


def test_private_keys_are_encrypted_at_rest(setup: Setup) -> None:
    setup.keyring.current()
    with setup.store.transaction() as conn:
        sealed = conn.execute(select(issuer_keys.c.sealed_key)).scalar_one()
    raw = base64.b64decode(sealed)
    assert b"PRIVATE KEY" not in raw
    assert b"PRIVATE KEY" not in sealed.encode()
