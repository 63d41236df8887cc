"""The HTTP gateway's door asks every request for a proof of possession of the grant's
key: the bearer grant alone (copied from a logging proxy with the agent's
``Mcp-Session-Id``) answered an upstream's sampling request in the agent's name (the
answer reached the upstream, audited as the agent's), opened and filled the grant's MCP
sessions, ended them and cancelled the agent's calls. Each such request is now ``401``
with its proof's code, audited, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.audit import EventFilter, search_events
from proctor.clock import SystemClock
from proctor.gateway import Gateway, GrantAuth
from proctor.gateway.client import RESPONSE_METHOD, proof_method
from proctor.gateway.http import MAX_SESSIONS_PER_GRANT
from proctor.grants import make_proof
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import gateway_from, http_gateway, listening_socket, served, url_of
from tests.gateway.recording_upstream import create_server, heard

pytestmark = pytest.mark.anyio

VERSION = "2025-06-18"
HEADERS = {"Accept": "application/json, text/event-stream",
           "Content-Type": "application/json", "MCP-Protocol-Version": VERSION}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@asynccontextmanager
async def _asking(deployment: Deployment) -> AsyncIterator[tuple[str, Gateway]]:
    """The gateway in front of an upstream (streamable HTTP) whose tools ask the agent
    during the call; yields ``/mcp/test``'s URL."""
    upstream_sock, sock = listening_socket(), listening_socket()
    port = sock.getsockname()[1]
    config = deployment.config({
        "gateway": {"public_url": url_of(sock), "listen": f"127.0.0.1:{port}",
                    "authorization_servers": ["https://proctor.acme.example"]},
        "upstreams": {"test": {"url": f"{url_of(upstream_sock)}/mcp"}}})
    record = deployment.tmp / "heard.jsonl"
    async with served(create_server(record).streamable_http_app(), upstream_sock), \
            gateway_from(deployment, config, sock) as gateway:
        yield f"{url_of(sock)}/mcp/test", gateway


def _refusals(deployment: Deployment) -> list[Mapping[str, Any]]:
    found = search_events(deployment.runtime.store, EventFilter(action="gateway.reject"),
                          newest_first=False, limit=500)
    return [e.event for e in found]


def _reason(response: httpx2.Response) -> str:
    assert response.status_code == 401, response.text
    assert "invalid_token" in response.headers["www-authenticate"]
    reason: str = response.json()["reason"]
    return reason


async def test_a_grant_without_its_key_answers_cancels_and_ends_nothing_of_the_agents(
        deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "test/*"}])
    thief_key = ec.generate_private_key(ec.SECP256R1())
    seen: dict[str, Any] = {}
    outcomes: dict[str, str] = {}

    async def note_request(request: httpx2.Request) -> None:
        body = json.loads(request.content) if request.content else {}
        if isinstance(body, dict) and body.get("method") == "tools/call":
            seen["call"] = body["id"]

    async def note_response(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            seen["session"] = response.headers["mcp-session-id"]

    async with _asking(deployment) as (endpoint, _):

        async def sample(context: Any, params: Any) -> types.CreateMessageResult:
            # the thief holds the grant and the session id, not the key
            stolen = {**HEADERS, "Authorization": f"Bearer {grant.token}",
                      "Mcp-Session-Id": seen["session"]}
            forged = {"jsonrpc": "2.0", "id": context.request_id, "result": {
                "role": "assistant", "model": "thief", "stopReason": "endTurn",
                "content": {"type": "text", "text": "written by the thief"}}}
            own_proof = make_proof(thief_key, grant.token, method=RESPONSE_METHOD,
                                   target=endpoint, now=SystemClock().now())
            async with httpx2.AsyncClient(timeout=WAIT) as thief:
                outcomes["answer"] = _reason(await thief.post(
                    endpoint, headers=stolen, json=forged))
                outcomes["answer, own key"] = _reason(await thief.post(
                    endpoint, headers={**stolen, "DPoP": own_proof}, json=forged))
                outcomes["cancel"] = _reason(await thief.post(endpoint, headers=stolen, json={
                    "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": seen["call"]}}))
                outcomes["delete"] = _reason(await thief.delete(endpoint, headers=stolen))
                outcomes["listen"] = _reason(await thief.get(endpoint, headers=stolen))
            return types.CreateMessageResult(
                role="assistant", model="agent", stop_reason="endTurn",
                content=types.TextContent(type="text", text="the agent's own"))

        auth = GrantAuth(grant.token, deployment.key, SystemClock())
        with anyio.fail_after(WAIT):
            async with httpx2.AsyncClient(
                    auth=auth, timeout=WAIT, event_hooks={
                        "request": [note_request], "response": [note_response]}) as http, \
                    streamable_http_client(endpoint, http_client=http) as (read, write), \
                    ClientSession(read, write, sampling_callback=sample) as agent:
                await agent.initialize()
                result = await agent.call_tool("ask_model", {"question": "hello"})
                assert not result.is_error, result
                # the session the thief tried to end still serves the agent
                assert [t.name for t in (await agent.list_tools()).tools] == [
                    "ask_model", "ask_user"]

    assert outcomes == {"answer": "proof_missing", "answer, own key": "proof_wrong_key",
                        "cancel": "proof_missing", "delete": "proof_missing",
                        "listen": "proof_missing"}
    answers = [h["answer"] for h in heard(deployment.tmp / "heard.jsonl")]
    assert [a["model"] for a in answers] == ["agent"]  # the thief's never got there
    refusals = _refusals(deployment)
    assert [(e["detail"]["code"], e["detail"]["method"]) for e in refusals] == [
        ("proof_missing", "response"), ("proof_wrong_key", "response"),
        ("proof_missing", "notifications/cancelled"), ("proof_missing", "DELETE"),
        ("proof_missing", "GET")]
    for event in refusals:  # not the agent's act: the caller did not prove its key
        assert (event["actor"]["type"], event["actor"]["id"]) == ("system", "unauthenticated")
        assert event["detail"]["grant"] == grant.claims.grant_id
        assert event["task"] == grant.claims.task_id


async def test_a_grant_without_its_key_opens_no_session_and_holds_none_of_its_share(
        deployment: Deployment) -> None:
    # the bearer alone filled the grant's MCP sessions: the agent's own initialize was
    # then refused 429 `session_limit` until they idled out
    grant = deployment.grant()
    built: list[Any] = []
    async with http_gateway(deployment, built=built) as public, \
            httpx2.AsyncClient(timeout=WAIT, headers=HEADERS) as http:
        endpoint = f"{public}/mcp/test"
        [sessions] = [m.kwargs["sessions"] for m in built[0].user_middleware
                      if "sessions" in m.kwargs]
        bearer = {"Authorization": f"Bearer {grant.token}"}
        for _ in range(MAX_SESSIONS_PER_GRANT + 1):
            assert _reason(await http.post(endpoint, headers=bearer,
                                           json=INITIALIZE)) == "proof_missing"
        assert sessions.mcp_owner == {}
        assert sessions.open_count(grant.claims.grant_id) == 0
        # a proof made for another request is not this one's
        listing = make_proof(deployment.key, grant.token, method="tools/list",
                             target=endpoint, now=SystemClock().now())
        assert _reason(await http.post(endpoint, headers={**bearer, "DPoP": listing},
                                       json=INITIALIZE)) == "proof_wrong_target"
        # the agent's own proof opens a session, once: sent again it is spent
        proof = make_proof(deployment.key, grant.token, method="initialize",
                           target=endpoint, now=SystemClock().now())
        opened = await http.post(endpoint, headers={**bearer, "DPoP": proof}, json=INITIALIZE)
        assert opened.status_code == 200, opened.text
        assert _reason(await http.post(endpoint, headers={**bearer, "DPoP": proof},
                                       json=INITIALIZE)) == "proof_replayed"
        assert sessions.open_count(grant.claims.grant_id) == 1
    codes = [e["detail"]["code"] for e in _refusals(deployment)]
    assert codes == ["proof_missing"] * (MAX_SESSIONS_PER_GRANT + 1) + [
        "proof_wrong_target", "proof_replayed"]


async def test_an_mcp_session_is_refused_to_a_request_proving_another_key_than_opened_it(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    built: list[Any] = []
    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    async with http_gateway(deployment, built=built) as public, \
            httpx2.AsyncClient(auth=auth, timeout=WAIT, headers=HEADERS) as http:
        endpoint = f"{public}/mcp/test"
        [sessions] = [m.kwargs["sessions"] for m in built[0].user_middleware
                      if "sessions" in m.kwargs]
        opened = await http.post(endpoint, json=INITIALIZE)
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        assert sessions.mcp_owner[session] == (grant.claims.grant_id,
                                               grant.claims.key_thumbprint)
        on_it = {"Mcp-Session-Id": session}
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        assert (await http.post(endpoint, headers=on_it, json={
            "jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
        assert (await http.post(endpoint, headers=on_it, json=listing)).status_code == 200
        # as if another key of the grant's agent had opened it
        sessions.mcp_owner[session] = (grant.claims.grant_id, "another-thumbprint")
        refused = await http.post(endpoint, headers=on_it, json=listing)
        assert refused.status_code == 404, refused.text


def test_the_agent_proves_every_kind_of_request() -> None:
    assert proof_method("POST", "tools/list") == "tools/list"
    assert proof_method("POST", None) == RESPONSE_METHOD
    assert proof_method("GET", None) == "GET"
    assert proof_method("delete", "tools/call") == "DELETE"

