"""Security review findings 1 and 7 through the HTTP API: a delegator cannot bind a grant
naming an agent without a registered key to a key of its own; suspending an agent ends
its grants, and a review brings none back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proctor.clock import FrozenClock
from proctor.grants import make_proof
from proctor.runtime import Runtime, issuer_for, open_runtime
from tests.identity.factories import SvidAuthority, manifest, svid_home

from .conftest import (
    BASE_URL,
    CODER,
    OWNER,
    SUPPORT,
    TARGET,
    Api,
    SignsAsAgent,
    api_client,
    make_app,
)
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

FINANCE = "spiffe://acme.example/agent/finance"
KB = [{"tool": "kb/search_articles"}]


@pytest.fixture
def svids() -> SvidAuthority:
    return SvidAuthority()


@pytest.fixture
def svid_runtime(database_url: str, tmp_path: Path, frozen: FrozenClock,
                 svids: SvidAuthority) -> Iterator[Runtime]:
    """A home that trusts one SPIFFE trust bundle, so agents may prove themselves by
    JWT-SVID."""
    runtime = open_runtime(svid_home(tmp_path / "home", database_url, svids), clock=frozen)
    yield runtime
    runtime.close()


@pytest.fixture
async def api(svid_runtime: Runtime, frozen: FrozenClock) -> AsyncIterator[Api]:
    app, token = make_app(svid_runtime)
    signer = SignsAsAgent()
    async with api_client(app, signer) as client:
        api = signer.api = Api(client, app, svid_runtime, frozen, token)
        await api.register(SUPPORT, "support-agents")
        await api.register(CODER, "coding-agents")
        registered = await client.post("/v1/agents", headers=api.admin, json={
            "id": FINANCE, "owner": OWNER, "groups": ["support-agents"],
            "proof": {"method": "jwt_svid"},
            "manifest": {"model_id": "m", "weights_digest": "sha256:" + "a" * 64,
                         "system_prompt_digest": "sha256:" + "b" * 64, "tools": [],
                         "dependency_lock_digest": "sha256:" + "c" * 64}})
        assert registered.status_code == 201, registered.text
        yield api


def _svid(api: Api, svids: SvidAuthority) -> str:
    return svids.svid(FINANCE, api.clock.now())


async def _exchange(api: Api, parent: dict[str, str], to: str, **extra: object
                    ) -> httpx.Response:
    issuer = issuer_for(api.runtime.settings)
    proof = api.call_proof(SUPPORT, parent["token"], method="grant/exchange", target=issuer)
    return await api.client.post("/v1/grants/exchange", headers=api.agent(SUPPORT), json={
        "token": parent["token"], "proof": proof, "to_agent": to, "scope": {"tools": KB},
        "ttl_seconds": 60, **extra})


async def test_a_delegation_to_an_agent_without_a_key_is_an_offer_only_it_can_redeem(
        api: Api, svids: SvidAuthority) -> None:
    issuer = issuer_for(api.runtime.settings)
    parent = await api.grant(SUPPORT, KB)
    # the delegator's old trick: a holder proof of its own key for the other agent
    mine = make_proof(api.private_key(SUPPORT), None, method="grant/issue", target=issuer,
                      now=api.clock.now())
    tricked = await _exchange(api, parent, FINANCE, holder_proof=mine)
    assert_problem(tricked, 422, "request_invalid")
    offered = await _exchange(api, parent, FINANCE)
    assert offered.status_code == 201, offered.text
    offer = offered.json()
    assert (offer["kind"], offer["agent"]) == ("offer", FINANCE)
    assert "token" not in offer
    redeem = f"/v1/grants/offers/{offer['offer']}/redeem"

    # the delegator cannot redeem it: not as itself, not with its key for the other agent
    as_delegator = await api.client.post(redeem, headers=api.agent(SUPPORT),
                                         json={"holder_proof": mine})
    assert_problem(as_delegator, 403, "forbidden")
    svid = _svid(api, svids)
    untied = await api.client.post(redeem, headers=api.admin, json={
        "holder_proof": mine, "identity_proof": svid})
    assert_problem(untied, 403, "proof_wrong_target")

    # the agent redeems it with its own SVID (as its credential) and its own key
    key = ec.generate_private_key(ec.SECP256R1())
    holder = make_proof(key, svid, method="grant/issue", target=issuer, now=api.clock.now())
    redeemed = await api.client.post(redeem, headers={"Authorization": f"Bearer {svid}"},
                                     json={"holder_proof": holder})
    assert redeemed.status_code == 201, redeemed.text
    grant = redeemed.json()
    assert (grant["kind"], grant["agent"], grant["actor_chain"]) == ("grant", FINANCE, [SUPPORT])
    again = await api.client.post(redeem, headers={"Authorization": f"Bearer {svid}"},
                                  json={"holder_proof": make_proof(
                                      key, svid, method="grant/issue", target=issuer,
                                      now=api.clock.now())})
    assert_problem(again, 409, "offer_redeemed")

    # only the agent's key works with it: whoami answers the agent only with its key
    def dpop(private: ec.EllipticCurvePrivateKey) -> dict[str, str]:
        return {"Authorization": f"DPoP {grant['token']}", "DPoP": make_proof(
            private, grant["token"], method="GET", target=f"{BASE_URL}/v1/whoami",
            now=api.clock.now())}
    assert_problem(await api.client.get("/v1/whoami", headers=dpop(api.private_key(SUPPORT))),
                   401, "proof_wrong_key")
    whoami = await api.client.get("/v1/whoami", headers=dpop(key))
    assert whoami.json()["id"] == FINANCE
    decided = await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": api.call_proof(SUPPORT, grant["token"]),
        "call": {"tool": "kb/search_articles", "args": {"query": "q"}}, "target": TARGET})
    assert decided.status_code == 403


async def test_an_offer_is_not_redeemed_once_its_delegator_no_longer_holds_its_grant(
        api: Api, svids: SvidAuthority) -> None:
    # the delegator is reviewed on another manifest after the exchange: its grant is no
    # longer its own to hand on, and the offer it made is refused (403: the redeemer's
    # credential is fine), audited, not taken
    issuer = issuer_for(api.runtime.settings)
    parent = await api.grant(SUPPORT, KB)
    offered = await _exchange(api, parent, FINANCE)
    assert offered.json()["kind"] == "offer"
    api.runtime.registry.review(SUPPORT, reviewer="erin@acme.example",
                                manifest=manifest(model_id="its-next-model"))
    svid = _svid(api, svids)
    key = ec.generate_private_key(ec.SECP256R1())
    redeem = f"/v1/grants/offers/{offered.json()['offer']}/redeem"
    refused = await api.client.post(redeem, headers={"Authorization": f"Bearer {svid}"},
                                    json={"holder_proof": make_proof(
                                        key, svid, method="grant/issue", target=issuer,
                                        now=api.clock.now())})
    assert_problem(refused, 403, "grant_manifest_changed")
    assert api.runtime.grants.offer_of(offered.json()["offer"]).redeemed_at is None
    denied = [e.event for e in api.events() if e.event["action"] == "grant:issue"
              and e.event["outcome"] == "denied"]
    assert [(e["actor"]["id"], e["detail"]["code"]) for e in denied] == [
        (FINANCE, "grant_manifest_changed")]


async def test_an_operator_offers_a_grant_and_the_agent_redeems_it(
        api: Api, svids: SvidAuthority) -> None:
    issuer = issuer_for(api.runtime.settings)
    task = await api.client.post("/v1/tasks", headers=api.admin, json={
        "agent": FINANCE, "purpose": "close the month", "on_behalf_of": OWNER})
    no_key = await api.client.post("/v1/grants", headers=api.admin, json={
        "task": task.json()["id"], "scope": {"tools": KB}})
    assert_problem(no_key, 422, "holder_identity_missing")
    offered = await api.client.post("/v1/grants/offers", headers=api.admin, json={
        "task": task.json()["id"], "scope": {"tools": KB}})
    assert offered.status_code == 201, offered.text
    svid = _svid(api, svids)
    key = ec.generate_private_key(ec.SECP256R1())
    redeemed = await api.client.post(
        f"/v1/grants/offers/{offered.json()['offer']}/redeem",
        headers={"Authorization": f"Bearer {svid}"},
        json={"holder_proof": make_proof(key, svid, method="grant/issue", target=issuer,
                                         now=api.clock.now())})
    assert redeemed.status_code == 201, redeemed.text
    # the agent itself may also ask directly, its own SVID being its credential
    direct = await api.client.post("/v1/grants", headers={"Authorization": f"Bearer {svid}"},
                                   json={"task": task.json()["id"], "scope": {"tools": KB},
                                         "holder_proof": make_proof(
                                             key, svid, method="grant/issue", target=issuer,
                                             now=api.clock.now())})
    assert direct.status_code == 201, direct.text


async def test_suspension_through_the_api_revokes_the_agents_grants_for_good(
        api: Api) -> None:
    parent = await api.grant(SUPPORT, KB)
    child = await _exchange(api, parent, CODER)
    assert child.json()["kind"] == "grant"
    suspended = await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=api.admin,
                                      json={"reason": "odd behaviour"})
    assert suspended.status_code == 200
    reviewed = await api.client.post(f"/v1/agents/{SUPPORT}/review", headers=api.admin, json={
        "expected_digest": api.runtime.registry.get(SUPPORT).review_digest})
    assert reviewed.status_code == 200
    for token, holder in ((parent["token"], SUPPORT), (child.json()["token"], CODER)):
        check = await api.client.post("/v1/grants/check", headers=api.admin,
                                      json={"token": token})
        assert (check.json()["valid"], check.json()["code"]) == (False, "grant_revoked"), holder
    # the suspension's own event names the grants its transaction revoked (the roots: the
    # child derived from the parent was put out of force with it)
    revocations = [e.event for e in api.events() if e.event["action"] == "agent.suspend"]
    assert [(e["actor"]["type"], e["detail"]["roots"]) for e in revocations] == [
        ("human", [parent["grant_id"]])]
