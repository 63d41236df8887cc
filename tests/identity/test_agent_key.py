"""An agent's own key is a public Ed25519 or P-256 JWK; anything else is refused."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from proctor.errors import IdentityError
from proctor.identity import import_agent_key

from .factories import public_jwk


def test_a_p256_key_allows_es256_only_and_keeps_public_members() -> None:
    key = ECKey.generate_key("P-256")
    imported = import_agent_key({**public_jwk(key), "kid": "mine", "use": "sig"})
    assert imported.algorithms == ("ES256",)
    assert set(imported.jwk) == {"kty", "crv", "x", "y"}
    assert imported.thumbprint == key.thumbprint()


def test_an_ed25519_key_allows_ed25519_signatures() -> None:
    imported = import_agent_key(public_jwk(OKPKey.generate_key("Ed25519")))
    assert imported.algorithms == ("Ed25519", "EdDSA")


def _bad_keys() -> list[Any]:
    p256 = public_jwk(ECKey.generate_key("P-256"))
    return [
        "not a jwk",
        dict(ECKey.generate_key("P-256").as_dict(private=True)),
        public_jwk(RSAKey.generate_key(2048)),
        public_jwk(ECKey.generate_key("P-384")),
        public_jwk(OKPKey.generate_key("X25519")),
        {"kty": "oct", "k": "c2VjcmV0"},
        {**p256, "y": p256["x"]},
        {**p256, "alg": "HS256"},
        {**p256, "use": "enc"},
        {"kty": "EC", "crv": "P-256", "x": p256["x"]},
    ]


@pytest.mark.parametrize("jwk", _bad_keys())
def test_a_key_that_cannot_be_an_agent_key_is_refused(jwk: Any) -> None:
    with pytest.raises(IdentityError) as caught:
        import_agent_key(jwk)
    assert caught.value.code == "agent_key_invalid"
