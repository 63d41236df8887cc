"""An Ed25519 public key of small order verifies signatures nobody made: it is never
registered, and never binds a grant (found by review)."""

from __future__ import annotations

import json

import pytest

from proctor.jose import b64url_encode
from tests.identity.factories import manifest, proof_claims

from .conftest import CODER, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

# The neutral point (y = 1): [s]B = R + [h]A holds for R = itself and s = 0, whatever
# the message, so a signature of 64 fixed bytes "verifies" every proof.
NEUTRAL = bytes([1]) + bytes(31)


def forged(claims: dict[str, object]) -> str:
    """A compact JWS whose signature is R = the neutral point, s = 0: made by no key."""
    parts = [b64url_encode(json.dumps(part).encode())
             for part in ({"alg": "Ed25519", "typ": "JWT"}, claims)]
    return ".".join([*parts, b64url_encode(NEUTRAL + bytes(32))])


async def test_an_agent_key_of_small_order_is_never_registered(api: Api) -> None:
    # Registered, the key let anyone sign in as the agent with a proof no one signed.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(NEUTRAL)}
    response = await api.client.post("/v1/agents", headers=api.admin, json={
        "id": CODER, "owner": "bob@acme.example", "groups": ["coding-agents"],
        "proof": {"method": "own_key", "jwk": jwk}, "manifest": manifest().as_json()})
    assert_problem(response, 422, "agent_key_invalid")
    proof = forged(proof_claims(CODER, api.clock.now()))
    assert_problem(await api.client.get("/v1/whoami",
                                        headers={"Authorization": f"Bearer {proof}"}),
                   401, "agent_unknown")
