"""Who may call at all: humans with API tokens, agents with workload proofs or grants;
everything else is a 401 problem with a specific code."""

from __future__ import annotations

import httpx
import pytest

from proctor.grants import make_proof
from proctor.server import ApiTokens, ServerConfig, create_app
from tests.identity.factories import own_key_proof

from .conftest import BASE_URL, CODER, SUPPORT, Api

pytestmark = pytest.mark.anyio


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"], body["type"]) == (
        status, code, f"urn:proctor:problem:{code}")
    assert body["detail"]


async def test_a_request_without_credentials_is_401_with_a_challenge(api: Api) -> None:
    response = await api.client.get("/v1/agents")
    assert_problem(response, 401, "credentials_missing")
    assert "Bearer" in response.headers["www-authenticate"]
    assert "DPoP" in response.headers["www-authenticate"]


async def test_the_admin_token_authenticates_the_local_admin(api: Api) -> None:
    response = await api.client.get("/v1/whoami", headers=api.admin)
    assert response.status_code == 200
    assert response.json() == {"type": "human", "id": "local-admin", "roles": ["admin"],
                               "method": "api_token", "owner": None}


@pytest.mark.parametrize(("header", "code"), [
    ("Bearer ptk_not-a-real-token", "api_token_invalid"),
    ("Basic YWRtaW46YWRtaW4=", "credentials_malformed"),
    ("Bearer", "credentials_malformed"),
    ("Bearer a b", "credentials_malformed"),
    ("Bearer not-a-jwt", "proof_malformed"),
    ("DPoP not-a-grant", "grant_malformed"),
])
async def test_bad_credentials_get_their_specific_code(api: Api, header: str, code: str) -> None:
    response = await api.client.get("/v1/whoami", headers={"Authorization": header})
    assert_problem(response, 401, code)


async def test_a_revoked_or_expired_api_token_stops_working(api: Api) -> None:
    tokens = ApiTokens(api.runtime.store, api.runtime.clock)
    revoked = tokens.create("dave@acme.example", {"approver"}, issuers=())
    short = tokens.create("erin@acme.example", {"auditor"}, issuers=(), ttl_seconds=60)
    for minted in (revoked, short):
        ok = await api.client.get("/v1/whoami",
                                  headers={"Authorization": f"Bearer {minted.token}"})
        assert ok.status_code == 200
    tokens.revoke(revoked.record.id)
    api.clock.advance(seconds=61)
    for minted in (revoked, short):
        response = await api.client.get("/v1/whoami",
                                        headers={"Authorization": f"Bearer {minted.token}"})
        assert_problem(response, 401, "api_token_invalid")


async def test_an_agent_authenticates_with_its_own_key_proof(agents: Api) -> None:
    response = await agents.client.get("/v1/whoami", headers=agents.agent(SUPPORT))
    assert response.status_code == 200
    assert response.json() == {"type": "agent", "id": SUPPORT, "roles": ["agent"],
                                "method": "own_key", "owner": "bob@acme.example"}


async def test_a_suspended_agent_is_refused_even_with_a_proof_it_used_before(
        agents: Api) -> None:
    headers = agents.agent(SUPPORT)
    assert (await agents.client.get("/v1/whoami", headers=headers)).status_code == 200
    suspended = await agents.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=agents.admin,
                                         json={"reason": "key leaked"})
    assert suspended.json()["trust_state"] == "suspended"
    assert_problem(await agents.client.get("/v1/whoami", headers=headers), 401,
                   "agent_not_active")


async def test_a_proof_signed_by_another_agents_key_is_refused(agents: Api) -> None:
    forged = own_key_proof(agents.keys[CODER], SUPPORT, agents.clock.now())
    response = await agents.client.get("/v1/whoami", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(response, 401, "proof_invalid_signature")


async def test_an_agent_authenticates_with_its_grant_and_a_dpop_proof_for_the_request(
        agents: Api) -> None:
    grant = await agents.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    url = f"{BASE_URL}/v1/whoami"
    proof = make_proof(agents.private_key(SUPPORT), grant["token"], method="GET", target=url,
                       now=agents.clock.now())
    headers = {"Authorization": f"DPoP {grant['token']}", "DPoP": proof}
    response = await agents.client.get("/v1/whoami", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["method"] == "grant"
    assert response.json()["id"] == SUPPORT
    assert_problem(await agents.client.get("/v1/whoami", headers=headers), 401,
                   "proof_replayed")
    no_proof = {"Authorization": f"DPoP {grant['token']}"}
    assert_problem(await agents.client.get("/v1/whoami", headers=no_proof), 401,
                   "proof_missing")
    other_url = make_proof(agents.private_key(SUPPORT), grant["token"], method="GET",
                           target=f"{BASE_URL}/v1/agents", now=agents.clock.now())
    response = await agents.client.get("/v1/whoami", headers={
        "Authorization": f"DPoP {grant['token']}", "DPoP": other_url})
    assert_problem(response, 401, "proof_wrong_target")


async def test_a_revoked_grant_no_longer_authenticates(agents: Api) -> None:
    grant = await agents.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    revoked = await agents.client.post(f"/v1/grants/{grant['accessor']}/revoke",
                                       headers=agents.admin, json={"reason": "done"})
    assert revoked.status_code == 200, revoked.text
    proof = make_proof(agents.private_key(SUPPORT), grant["token"], method="GET",
                       target=f"{BASE_URL}/v1/whoami", now=agents.clock.now())
    response = await agents.client.get("/v1/whoami", headers={
        "Authorization": f"DPoP {grant['token']}", "DPoP": proof})
    assert_problem(response, 401, "grant_revoked")


async def test_guessing_credentials_from_one_address_is_rate_limited(api: Api) -> None:
    burst = api.app.state.proctor.limiter.burst
    headers = {"Authorization": "Bearer ptk_guess"}
    for _ in range(burst):
        assert (await api.client.get("/v1/whoami", headers=headers)).status_code == 401
    limited = await api.client.get("/v1/whoami", headers=headers)
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    # other callers are not affected
    assert (await api.client.get("/v1/whoami", headers=api.admin)).status_code == 200


async def test_a_grant_sent_as_a_bearer_token_without_its_proof_is_refused(
        agents: Api) -> None:
    grant = await agents.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    response = await agents.client.get("/v1/whoami",
                                       headers={"Authorization": f"Bearer {grant['token']}"})
    assert response.status_code == 401
    assert response.json()["code"].startswith("proof_")


async def test_with_public_url_set_the_host_a_caller_sends_never_changes_the_proofs_target(
        agents: Api) -> None:
    public = "https://proctor.acme.example"
    grant = await agents.grant(SUPPORT, [{"tool": "kb/search_articles"}])
    app = create_app(agents.runtime, ServerConfig(public_url=public))
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://attacker.example") as c:

        async def whoami(target: str) -> httpx.Response:
            proof = make_proof(agents.private_key(SUPPORT), grant["token"], method="GET",
                               target=target, now=agents.clock.now())
            return await c.get("/v1/whoami", headers={
                "Authorization": f"DPoP {grant['token']}", "DPoP": proof,
                "Host": "attacker.example", "X-Forwarded-Host": "attacker.example"})

        assert_problem(await whoami("http://attacker.example/v1/whoami"), 401,
                       "proof_wrong_target")
        named = await whoami(f"{public}/v1/whoami")
        assert named.status_code == 200, named.text
