"""A call's proof is bound to what the call is, not to what its caller says it is:
``POST /v1/decide`` and ``POST /v1/grants/check`` took ``method`` and ``target`` from the
body, and the proof was compared with those, so a proof the agent made for something
else (a gateway's ``tools/list``, a grant exchange at the issuer) was spent as a call's
(both answered allow). Now ``method`` is one of a call's methods, a proof made for any
other is refused, and ``target`` is the route's own URL or one under an enforcement
point the deployment configured (``enforcement_points``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proctor.errors import ConfigError
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.runtime import issuer_for
from proctor.server import ServerConfig

from .conftest import BASE_URL, SUPPORT, TARGET, Api

pytestmark = pytest.mark.anyio

SEARCH = [{"tool": "kb/search_articles"}]
CALL = {"tool": "kb/search_articles", "args": {"query": "q"}}
ELSEWHERE = "https://elsewhere.acme.example/mcp"


async def _decide(api: Api, grant: dict[str, Any], proof: str, **body: Any) -> httpx.Response:
    return await api.client.post("/v1/decide", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": proof, "call": CALL, **body})


async def _check(api: Api, grant: dict[str, Any], proof: str, **body: Any) -> httpx.Response:
    return await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": proof, "tool": CALL["tool"], "args": CALL["args"],
        **body})


def _issuer(api: Api) -> str:
    return issuer_for(api.runtime.settings)


async def test_a_proof_made_for_a_listing_or_an_exchange_is_not_spent_as_a_call(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, SEARCH)
    listing = api.call_proof(SUPPORT, grant["token"], method="tools/list")
    exchange = api.call_proof(SUPPORT, grant["token"], method=EXCHANGE_METHOD,
                              target=_issuer(api))
    for route in (_decide, _check):
        # the caller names the proof's own method: not a call's
        refused = await route(api, grant, listing, method="tools/list", target=TARGET)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "request_invalid"
        refused = await route(api, grant, exchange, method=EXCHANGE_METHOD,
                              target=_issuer(api))
        assert refused.status_code == 422, refused.text
    # named as a call, the proof does not fit it
    denied = (await _decide(api, grant, listing, target=TARGET)).json()
    assert (denied["decision"], denied["code"]) == ("deny", "proof_wrong_target")
    checked = (await _check(api, grant, listing, target=TARGET)).json()
    assert (checked["valid"], checked["code"]) == (False, "proof_wrong_target")
    # the exchange proof was not spent: the exchange it was made for takes it (and goes
    # on to refuse handing a grant on to its own holder, after the proof's check)
    exchanged = await api.client.post("/v1/grants/exchange", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": exchange, "to_agent": SUPPORT, "scope": {
            "tools": SEARCH}})
    assert exchanged.json()["code"] == "delegation_cycle", exchanged.text


async def test_a_call_named_at_a_url_that_is_no_enforcement_point_is_refused_unspent(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, SEARCH)
    for route in (_decide, _check):
        proof = api.call_proof(SUPPORT, grant["token"], target=ELSEWHERE)
        refused = await route(api, grant, proof, target=ELSEWHERE)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "proof_target_unknown"
        assert "enforcement_points" in refused.json()["detail"]
    # an enforcement point's own URL, and one under it, are taken
    for target in (TARGET, f"{TARGET}/crm"):
        proof = api.call_proof(SUPPORT, grant["token"], target=target)
        allowed = (await _decide(api, grant, proof, target=target)).json()
        assert (allowed["decision"], allowed["code"]) == ("allow", "allow"), allowed
    # the route's own URL is always its own (the default)
    proof = api.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/decide")
    allowed = (await _decide(api, grant, proof)).json()
    assert allowed["decision"] == "allow", allowed
    proof = api.call_proof(SUPPORT, grant["token"], target=f"{BASE_URL}/v1/grants/check")
    assert (await _check(api, grant, proof)).json()["valid"] is True


async def test_a_proof_refused_for_its_target_is_still_unspent(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, SEARCH)
    proof = api.call_proof(SUPPORT, grant["token"], target=TARGET)
    refused = await _decide(api, grant, proof, target=f"{TARGET}x")  # not under the point
    assert refused.json()["code"] == "proof_target_unknown"
    allowed = (await _decide(api, grant, proof, target=TARGET)).json()
    assert allowed["decision"] == "allow", allowed


def test_an_enforcement_point_is_an_http_url_without_query() -> None:
    for point in ("gateway.acme.example/mcp", "https://gw.acme.example/mcp?x=1",
                  "ftp://gw.acme.example", "https://gw.acme.example/mcp/"):
        with pytest.raises(ConfigError, match="enforcement point"):
            ServerConfig(enforcement_points=(point,))
    assert ServerConfig(enforcement_points=(TARGET,)).enforcement_points == (TARGET,)
