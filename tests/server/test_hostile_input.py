"""Hostile input never makes the API fail inside: deeply nested JSON in a token or a
proof, and NUL characters in ids and filters, are clear 4xx answers on both backends."""

from __future__ import annotations

import base64
import json

import pytest

from tests.server.conftest import SUPPORT, Api

pytestmark = pytest.mark.anyio


def _part(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


HEADER = _part(json.dumps({"alg": "ES256", "typ": "dpop+jwt"}).encode())
NESTED = _part(b"[" * 2000)  # deeper than Python's JSON decoder recurses


async def test_a_bearer_token_with_a_deeply_nested_payload_is_a_401(api: Api) -> None:
    response = await api.client.get("/v1/whoami", headers={
        "Authorization": f"Bearer {HEADER}.{NESTED}.c2ln"})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "proof_malformed"


async def test_a_dpop_grant_or_proof_with_deeply_nested_json_is_a_401(agents: Api) -> None:
    grant = await agents.grant(SUPPORT, [{"tool": "crm/lookup_customer"}])
    nested_proof = f"{HEADER}.{NESTED}.c2ln"
    nested_grant = f"{NESTED}.{HEADER}.c2ln"
    for token, proof in ((grant["token"], nested_proof), (nested_grant, nested_proof),
                         (grant["token"], f"{NESTED}.{HEADER}.c2ln")):
        response = await agents.client.get("/v1/whoami", headers={
            "Authorization": f"DPoP {token}", "DPoP": proof})
        assert response.status_code == 401, response.text
        assert response.json()["code"] in ("grant_malformed", "proof_invalid")


async def test_a_grant_with_a_deeply_nested_payload_is_refused_not_a_crash(agents: Api) -> None:
    token = f"{HEADER}.{NESTED}.c2ln"
    checked = await agents.client.post("/v1/grants/check", headers=agents.admin,
                                       json={"token": token})
    assert checked.status_code == 200, checked.text
    assert checked.json()["valid"] is False
    for path, body in (("/v1/grants/check", {"token": token}),
                       ("/v1/decide", {"token": token, "proof": "a.b.c",
                                       "call": {"tool": "crm/lookup_customer"}}),
                       ("/v1/grants/exchange", {"token": token, "proof": "a.b.c",
                                                "to_agent": SUPPORT, "scope": {"tools": []}})):
        response = await agents.client.post(path, headers=agents.agent(SUPPORT), json=body)
        assert response.status_code == 403, response.text  # held by nobody: not this agent
        assert response.json()["code"] == "forbidden"

