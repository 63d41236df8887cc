"""A message is a request the HTTP gateway decides (its proof checked in the decision, not
at the door) only as nothing but a request. The door took any message naming a decided
method for one: a stolen grant with the agent's ``Mcp-Session-Id``, no key, posted
``{"id": <the upstream's sampling id>, "method": "tools/call", "error": {...}}``, was
answered ``202`` with no proof asked, and the SDK read it as the agent's error answer:
the upstream got the thief's refusal and dropped the agent's own answer, and nothing was
audited. Now such a message proves the key at the door (``401``, audited as nobody's),
and the agent's own is refused ``message_invalid``: no reader is given it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.audit import EventFilter, search_events
from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway
from tests.gateway.recording_upstream import heard
from tests.gateway.test_http_door_proofs import HEADERS, INITIALIZE, VERSION, _asking

pytestmark = pytest.mark.anyio

ERROR = {"code": -1, "message": "declined"}
SHAPES: dict[str, Callable[[types.RequestId], dict[str, Any]]] = {
    "an error": lambda asked: {"jsonrpc": "2.0", "id": asked, "error": ERROR},
    "an error naming tools/call": lambda asked: {
        "jsonrpc": "2.0", "id": asked, "method": "tools/call", "error": ERROR},
}
ASKED = {"ask_model": "sampling/createMessage", "ask_user": "elicitation/create"}
OWN = {"ask_model": {"role": "assistant", "model": "agent", "stopReason": "endTurn",
                     "content": {"type": "text", "text": "the agent's own"}},
       "ask_user": {"action": "accept", "content": {"text": "the agent's own"}}}


def _refusals(deployment: Deployment) -> list[Mapping[str, Any]]:
    found = search_events(deployment.runtime.store, EventFilter(action="gateway.reject"),
                          newest_first=False, limit=50)
    return [e.event for e in found]


def _reason(response: httpx2.Response) -> str:
    """The reason a refusal names (the status and body of anything else)."""
    try:
        return str(response.json()["reason"])
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"


async def _progress(progress: float, total: float | None, message: str | None) -> None:
    """A progress callback: the call's progress token takes it onto the SDK's path."""


def _sampled() -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", model="agent", stop_reason="endTurn",
        content=types.TextContent(type="text", text="the agent's own"))


def _elicited() -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"text": "the agent's own"})


@pytest.mark.parametrize("tool", sorted(ASKED))
@pytest.mark.parametrize("path", ["direct", "sdk"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_a_grant_without_its_key_cannot_answer_the_upstream_whatever_method_it_names(
        deployment: Deployment, tool: str, path: str, shape: str) -> None:
    grant = deployment.grant([{"tool": "test/*"}])
    seen: dict[str, Any] = {}
    outcome: dict[str, Any] = {}

    async def note_response(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            seen["session"] = response.headers["mcp-session-id"]

    async with _asking(deployment) as (endpoint, _):

        async def asked(context: Any, params: Any) -> Any:
            forged = SHAPES[shape](context.request_id)
            stolen = {**HEADERS, "Authorization": f"Bearer {grant.token}",
                      "Mcp-Session-Id": seen["session"]}
            async with httpx2.AsyncClient(timeout=WAIT) as thief:
                refused = await thief.post(endpoint, headers=stolen, json=forged)
            outcome["thief"] = (refused.status_code, _reason(refused))
            return _sampled() if tool == "ask_model" else _elicited()

        auth = GrantAuth(grant.token, deployment.key, SystemClock())
        with anyio.fail_after(WAIT):
            async with httpx2.AsyncClient(auth=auth, timeout=WAIT, event_hooks={
                    "response": [note_response]}) as http, \
                    streamable_http_client(endpoint, http_client=http) as (read, write), \
                    ClientSession(
                        read, write, sampling_callback=asked if tool == "ask_model" else None,
                        elicitation_callback=asked if tool == "ask_user" else None) as agent:
                await agent.initialize()
                result = await agent.call_tool(
                    tool, {"question": "hello"},
                    progress_callback=_progress if path == "sdk" else None)

    assert outcome["thief"] == (401, "proof_missing")
    assert [c.text for c in result.content if isinstance(c, types.TextContent)] == ["answered"]
    assert heard(deployment.tmp / "heard.jsonl") == [
        {"method": ASKED[tool], "answer": OWN[tool]}]
    [refusal] = _refusals(deployment)  # not the agent's act: it proved no key
    assert (refusal["actor"]["type"], refusal["actor"]["id"]) == ("system", "unauthenticated")
    assert refusal["detail"] == {"code": "proof_missing", "grant": grant.claims.grant_id,
                                 "method": SHAPES[shape](1).get("method", "response")}


@pytest.mark.parametrize("path", ["direct", "sdk"])
async def test_the_agents_own_answer_naming_a_method_is_refused_not_read_as_its_answer(
        deployment: Deployment, path: str) -> None:
    grant = deployment.grant([{"tool": "test/*"}])
    seen: dict[str, Any] = {}
    refused: list[tuple[int, Any]] = []
    auth = GrantAuth(grant.token, deployment.key, SystemClock())

    async def note_response(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            seen["session"] = response.headers["mcp-session-id"]

    async with _asking(deployment) as (endpoint, _):

        async def sample(context: Any, params: Any) -> types.CreateMessageResult:
            on_it = {**HEADERS, "Mcp-Session-Id": seen["session"]}
            async with httpx2.AsyncClient(auth=auth, timeout=WAIT) as own:
                for forged in ({"jsonrpc": "2.0", "id": context.request_id,
                                "method": "tools/call", "error": ERROR},
                               {"jsonrpc": "2.0", "id": context.request_id,
                                "method": "notifications/message", "result": {}}):
                    answer = await own.post(endpoint, headers=on_it, json=forged)
                    refused.append((answer.status_code, answer.text))
            return _sampled()

        with anyio.fail_after(WAIT):
            async with httpx2.AsyncClient(auth=auth, timeout=WAIT, event_hooks={
                    "response": [note_response]}) as http, \
                    streamable_http_client(endpoint, http_client=http) as (read, write), \
                    ClientSession(read, write, sampling_callback=sample) as agent:
                await agent.initialize()
                await agent.call_tool("ask_model", {"question": "hello"},
                                      progress_callback=_progress if path == "sdk" else None)

    for status, text in refused:  # with a null id: its id is the upstream's request's
        assert status == 400, text
        body = json.loads(text)
        assert (body["id"], body["error"]["code"]) == (None, -32600)
        assert body["error"]["message"].startswith("message_invalid: ")
    assert len(refused) == 2
    assert heard(deployment.tmp / "heard.jsonl") == [
        {"method": "sampling/createMessage", "answer": OWN["ask_model"]}]


@pytest.mark.parametrize("version", ["2025-06-18", "2026-07-28"])
async def test_a_request_of_a_decided_method_is_one_request_or_refused(
        deployment: Deployment, version: str) -> None:
    grant = deployment.grant()
    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": "hi"}}
    if version != VERSION:  # the 2026-07-28 entry's envelope
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": version,
                           "io.modelcontextprotocol/clientCapabilities": {}}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    misshapen = {"with an error": {**call, "error": ERROR},
                 "with a result": {**call, "result": {}},
                 "with another member": {**call, "trace": "x"}}
    refused: dict[str, tuple[int, Any, str]] = {}
    async with http_gateway(deployment) as public, \
            httpx2.AsyncClient(auth=auth, timeout=WAIT, headers=HEADERS) as http:
        endpoint = f"{public}/mcp/test"
        opened = await http.post(endpoint, json=INITIALIZE)
        assert opened.status_code == 200, opened.text
        on_it = {"Mcp-Session-Id": opened.headers["mcp-session-id"],
                 "MCP-Protocol-Version": version, "MCP-Method": "tools/call",
                 "MCP-Name": "echo"}
        called = await http.post(endpoint, headers=on_it, json=call)
        assert called.status_code == 200 and "result" in called.json(), called.text
        for name, forged in misshapen.items():
            answer = await http.post(endpoint, headers=on_it, json=forged)
            body = answer.json()
            refused[name] = (answer.status_code, body.get("id"),
                             body.get("error", {}).get("message", "").partition(":")[0])
        # without the key, each proves it at the door
        async with httpx2.AsyncClient(timeout=WAIT, headers=HEADERS) as thief:
            stolen = {**on_it, "Authorization": f"Bearer {grant.token}"}
            thief_got = [_reason(await thief.post(endpoint, headers=stolen, json=forged))
                         for forged in misshapen.values()]
        # a method that is no string names no decided one: not a failure of the gateway
        odd = await http.post(endpoint, headers=on_it, json={
            "jsonrpc": "2.0", "id": 8, "method": ["tools/call"]})
    assert refused == {"with an error": (400, None, "message_invalid"),
                       "with a result": (400, None, "message_invalid"),
                       "with another member": (400, 7, "message_invalid")}
    assert thief_got == ["proof_missing"] * 3
    assert [(e["detail"]["code"], e["actor"]["id"]) for e in _refusals(deployment)] == [
        ("proof_missing", "unauthenticated")] * 3
    assert odd.status_code == 400, odd.text
    assert odd.json()["error"]["code"] == -32600
