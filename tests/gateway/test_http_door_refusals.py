"""A request the HTTP gateway refuses before any decision (an unknown tool, arguments
its schema refuses, a pin held) is the agent's act only once its proof of possession
holds: the door leaves a decided method's proof to the decision, so such a refusal was
audited as the agent's (``gateway.reject`` by the agent) on the bearer grant alone, or
with a proof of another key; and the agent's own proof, never claimed, could be spent
again on a call that is allowed. The proof is now checked at the refusal and its nonce
claimed in the refusal's own write; a proof that fails is the answer (its ``proof_*``
code), audited by ``system:unauthenticated``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proctor.audit import EventFilter, search_events
from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from proctor.grants import IssuedGrant, make_proof
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway

pytestmark = pytest.mark.anyio

VERSION = "2025-06-18"
HEADERS = {"Accept": "application/json, text/event-stream",
           "Content-Type": "application/json", "MCP-Protocol-Version": VERSION}


def _call(name: str, arguments: dict[str, Any], *, request_id: int = 7,
          meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta is not None:  # a call with `_meta` goes through the SDK, not the direct path
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def _answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether it came as JSON or as an SSE stream."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        found = [json.loads(line[len("data:"):]) for line in response.text.splitlines()
                 if line.startswith("data:") and line[len("data:"):].strip()]
        answers = [m for m in found if "result" in m or "error" in m]
        assert len(answers) == 1, response.text
        return dict(answers[0])
    return dict(response.json())


def _reason(response: httpx2.Response) -> str:
    error = _answer(response)["error"]
    reason: str = error["data"]["reason"]
    return reason


def _refusals(deployment: Deployment) -> list[Mapping[str, Any]]:
    found = search_events(deployment.runtime.store, EventFilter(action="gateway.reject"),
                          newest_first=False, limit=500)
    return [e.event for e in found]


async def _session(http: httpx2.AsyncClient, endpoint: str, grant: IssuedGrant,
                   deployment: Deployment) -> str:
    """An MCP session the agent opened (its tools listed, so the gateway session is up)."""
    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    opened = await http.post(endpoint, auth=auth, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": VERSION, "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}})
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    on_it = {"Mcp-Session-Id": session}
    assert (await http.post(endpoint, auth=auth, headers=on_it, json={
        "jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
    listed = await http.post(endpoint, auth=auth, headers=on_it, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert "result" in _answer(listed), listed.text
    return session


async def test_a_grant_without_its_key_writes_no_refusal_in_the_agents_name(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    thief_key = ec.generate_private_key(ec.SECP256R1())
    async with http_gateway(deployment) as public, \
            httpx2.AsyncClient(timeout=WAIT, headers=HEADERS) as http:
        endpoint = f"{public}/mcp/test"
        session = await _session(http, endpoint, grant, deployment)
        # the thief holds the grant and the agent's session id, not the key
        stolen = {"Authorization": f"Bearer {grant.token}", "Mcp-Session-Id": session}
        own = {**stolen, "DPoP": make_proof(thief_key, grant.token, method="tools/call",
                                            target=endpoint, now=SystemClock().now())}
        outcomes = {
            # the direct path: an unknown tool, arguments the schema refuses
            "unknown": _reason(await http.post(endpoint, headers=stolen,
                                               json=_call("no_such_tool", {}))),
            "bad arguments": _reason(await http.post(endpoint, headers=stolen,
                                                     json=_call("echo", {"text": 5}))),
            # the SDK's path
            "unknown, sdk": _reason(await http.post(endpoint, headers=stolen, json=_call(
                "no_such_tool", {}, meta={"progressToken": "p"}))),
            "unknown, own key": _reason(await http.post(endpoint, headers=own,
                                                        json=_call("no_such_tool", {}))),
        }
    assert outcomes == {"unknown": "proof_missing", "bad arguments": "proof_missing",
                        "unknown, sdk": "proof_missing", "unknown, own key": "proof_wrong_key"}
    refusals = _refusals(deployment)
    # none is the agent's act: the caller did not prove its key
    assert [e["actor"]["type"] for e in refusals] == ["system"] * 4
    assert [(e["actor"]["id"], e["detail"]["code"], e["target"]) for e in refusals] == [
        ("unauthenticated", "proof_missing", "test/no_such_tool"),
        ("unauthenticated", "proof_missing", "test/echo"),
        ("unauthenticated", "proof_missing", "test/no_such_tool"),
        ("unauthenticated", "proof_wrong_key", "test/no_such_tool")]
    for event in refusals:
        assert event["detail"]["grant"] == grant.claims.grant_id
        assert event["task"] == grant.claims.task_id


async def test_the_agents_refused_request_is_its_own_and_its_proof_is_spent(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    async with http_gateway(deployment) as public, \
            httpx2.AsyncClient(timeout=WAIT, headers=HEADERS) as http:
        endpoint = f"{public}/mcp/test"
        session = await _session(http, endpoint, grant, deployment)
        proof = make_proof(deployment.key, grant.token, method="tools/call", target=endpoint,
                           now=SystemClock().now())
        agents = {"Authorization": f"Bearer {grant.token}", "Mcp-Session-Id": session,
                  "DPoP": proof}
        assert _reason(await http.post(endpoint, headers=agents,
                                       json=_call("no_such_tool", {}))) == "tool_unknown"
        # whoever captured the refused request cannot spend its proof on a call allowed
        replayed = await http.post(endpoint, headers=agents,
                                   json=_call("echo", {"text": "hi"}, request_id=8))
        assert _reason(replayed) == "proof_replayed"
        # nor on another refusal (it is not written in the agent's name either)
        assert _reason(await http.post(endpoint, headers=agents, json=_call(
            "no_such_tool", {}, request_id=9, meta={"progressToken": "p"}))) == \
            "proof_replayed"
        # the agent's next call, with a proof of its own, is allowed
        auth = GrantAuth(grant.token, deployment.key, SystemClock())
        allowed = await http.post(endpoint, auth=auth, headers={"Mcp-Session-Id": session},
                                  json=_call("echo", {"text": "hi"}, request_id=10))
        assert "result" in _answer(allowed), allowed.text
    refusals = _refusals(deployment)
    assert [(e["actor"]["type"], e["actor"]["id"], e["detail"]["code"]) for e in refusals] \
        == [("agent", grant.claims.agent_id, "tool_unknown"),
            ("system", "unauthenticated", "proof_replayed")]
