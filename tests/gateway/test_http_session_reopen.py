"""A decided request (``tools/call``) whose proof the door leaves to its decision opened
the grant's gateway session, when it had none, before any proof was checked: sent on
the agent's MCP session after its gateway session went idle, a stolen grant without its
key stored a lease node, started the upstreams (their secrets leased) and presented the
configured manifest. The proof is now checked before a session opens (its nonce left to
the decision, a spent one refused); a proof that fails is the answer, audited by
``system:unauthenticated``, and nothing opens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proctor.audit import EventFilter, search_events
from proctor.clock import FrozenClock, SystemClock
from proctor.errors import GrantError
from proctor.gateway import Gateway, GrantAuth, UpstreamConfig
from proctor.grants import IssuedGrant, make_proof
from tests.gateway.conftest import ROOT, UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import IDLE, POLL, gateway_on, http_gateway
from tests.gateway.test_http_door_refusals import HEADERS, VERSION, _answer, _reason, _refusals

pytestmark = pytest.mark.anyio


def _call(text: str, request_id: int, *, sdk: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
    if sdk:  # a call with `_meta` goes through the SDK, not the direct path
        params["_meta"] = {"progressToken": "p"}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def _sessions_of(gateway: Gateway, grant: IssuedGrant) -> int:
    return sum(1 for s in gateway.sessions.values()
               if s.claims.grant_id == grant.claims.grant_id and not s.closed.is_set())


def _session_nodes(deployment: Deployment, grant: IssuedGrant) -> int:
    rows = deployment.runtime.store.fetch(
        "SELECT count(*) FROM leases WHERE parent_id = {p} AND kind = 'session'",
        [grant.claims.grant_id])
    return int(rows[0][0])


def _agents_proof(deployment: Deployment, grant: IssuedGrant, endpoint: str,
                  clock: FrozenClock) -> str:
    return make_proof(deployment.key, grant.token, method="tools/call", target=endpoint,
                      now=clock.now())


async def _idle(gateway: Gateway, grant: IssuedGrant, clock: FrozenClock) -> None:
    """The grant's gateway session, closed as idle (the agent's MCP session goes on)."""
    [session] = [s for s in gateway.sessions.values()
                 if s.claims.grant_id == grant.claims.grant_id]
    clock.advance(seconds=POLL + IDLE)
    await session.closed.wait()
    assert session.close_reason == "idle"


async def test_an_unproven_call_opens_no_gateway_session(deployment: Deployment) -> None:
    grant = deployment.grant()
    clock = FrozenClock(SystemClock().now())
    thief_key = ec.generate_private_key(ec.SECP256R1())
    plain = UpstreamConfig(name="test", command=tuple(UPSTREAM), cwd=str(ROOT))
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, None, test=plain) as (public, gateway), \
                httpx2.AsyncClient(timeout=WAIT, headers=HEADERS) as http:
            endpoint = f"{public}/mcp/test"
            auth = GrantAuth(grant.token, deployment.key, clock)
            opened = await http.post(endpoint, auth=auth, json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": VERSION, "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}})
            assert opened.status_code == 200, opened.text
            on_it = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
            assert (await http.post(endpoint, auth=auth, headers=on_it, json={
                "jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
            first = await http.post(endpoint, auth=auth, headers=on_it, json=_call("a", 2))
            assert "result" in _answer(first), first.text
            assert _session_nodes(deployment, grant) == 1
            await _idle(gateway, grant, clock)

            # the thief holds the grant and the agent's MCP session id, not the key
            stolen = {"Authorization": f"Bearer {grant.token}", **on_it}
            own = {**stolen, "DPoP": make_proof(thief_key, grant.token, method="tools/call",
                                                target=endpoint, now=clock.now())}
            # the agent's own proof, spent by a call already decided
            spent_headers = {**stolen, "DPoP": _agents_proof(deployment, grant, endpoint, clock)}
            allowed = await http.post(endpoint, headers=spent_headers, json=_call("b", 3))
            assert "result" in _answer(allowed), allowed.text
            assert _session_nodes(deployment, grant) == 2
            await _idle(gateway, grant, clock)

            outcomes = [
                _reason(await http.post(endpoint, headers=stolen, json=_call("x", 4))),
                _reason(await http.post(endpoint, headers=stolen,
                                        json=_call("x", 5, sdk=True))),
                _reason(await http.post(endpoint, headers=own, json=_call("x", 6))),
                _reason(await http.post(endpoint, headers=spent_headers,
                                        json=_call("x", 7))),
            ]
            assert outcomes == ["proof_missing", "proof_missing", "proof_wrong_key",
                                "proof_replayed"]
            # nothing opened: no session here, no lease node stored
            assert _sessions_of(gateway, grant) == 0
            assert _session_nodes(deployment, grant) == 2

            # the agent's next call, with a proof of its own, opens one; its proof is
            # claimed once, by its decision
            agents = {**stolen, "DPoP": _agents_proof(deployment, grant, endpoint, clock)}
            again = await http.post(endpoint, headers=agents, json=_call("c", 8))
            assert "result" in _answer(again), again.text
            assert _sessions_of(gateway, grant) == 1
            assert _reason(await http.post(endpoint, headers=agents,
                                           json=_call("c", 9))) == "proof_replayed"
    # the refusals before a session (the decision audits its own replay)
    refusals = _refusals(deployment)
    assert [(e["actor"]["type"], e["actor"]["id"], e["detail"]["code"]) for e in refusals] \
        == [("system", "unauthenticated", code) for code in (
            "proof_missing", "proof_missing", "proof_wrong_key", "proof_replayed")]
    for event in refusals:
        assert event["detail"]["grant"] == grant.claims.grant_id
        assert event["detail"]["method"] == "tools/call"
        assert event["target"] == "/mcp/test"


def _leaks(deployment: Deployment) -> list[Mapping[str, Any]]:
    found = search_events(deployment.runtime.store, EventFilter(action="gateway.leak"),
                          newest_first=False, limit=500)
    return [e.event for e in found]


async def test_a_leaked_grant_is_revoked_whoever_sent_it_and_named_the_agents_only_if_proven(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    by_thief, by_agent = deployment.grant([{"tool": "time/*"}]), deployment.grant(
        [{"tool": "time/*"}])
    async with http_gateway(deployment) as public, \
            httpx2.AsyncClient(timeout=WAIT, headers=HEADERS) as http:
        endpoint = f"{public}/mcp/test"
        auth = GrantAuth(grant.token, deployment.key, SystemClock())
        opened = await http.post(endpoint, auth=auth, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": VERSION, "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}})
        on_it = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        assert (await http.post(endpoint, auth=auth, headers=on_it, json={
            "jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
        warm = await http.post(endpoint, auth=auth, headers=on_it, json=_call("a", 2))
        assert "result" in _answer(warm), warm.text  # the gateway session is live
        # the thief holds the grant and the session id, not the key
        stolen = {"Authorization": f"Bearer {grant.token}", **on_it}
        assert _reason(await http.post(endpoint, headers=stolen, json=_call(
            f"use {by_thief.token}", 3))) == "proof_missing"
        proof = make_proof(deployment.key, grant.token, method="tools/call", target=endpoint,
                           now=SystemClock().now())
        agents = {**stolen, "DPoP": proof}
        assert _reason(await http.post(endpoint, headers=agents, json=_call(
            f"use {by_agent.token}", 4))) == "grant_leaked"
        # the refused call's proof is spent: not to be spent again on a call allowed
        assert _reason(await http.post(endpoint, headers=agents, json=_call("b", 5))) == \
            "proof_replayed"
    for leaked in (by_thief, by_agent):  # revoked whoever sent it
        with pytest.raises(GrantError) as checked:
            deployment.runtime.grants.inspect(leaked.token)
        assert checked.value.code == "grant_revoked"
    thief, agent = _leaks(deployment)
    assert thief["detail"]["proven"] is False and "agent" not in thief["detail"]
    assert thief["detail"]["grant"] == grant.claims.grant_id
    assert thief["detail"]["leaked_grant"] == by_thief.claims.grant_id
    assert agent["detail"]["proven"] is True
    assert agent["detail"]["agent"] == grant.claims.agent_id
    assert agent["detail"]["leaked_grant"] == by_agent.claims.grant_id
    refusals = _refusals(deployment)
    assert [(e["actor"]["type"], e["actor"]["id"], e["detail"]["code"]) for e in refusals] \
        == [("system", "unauthenticated", "proof_missing"),
            ("agent", grant.claims.agent_id, "grant_leaked")]
