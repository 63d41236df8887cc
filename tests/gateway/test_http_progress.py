"""Through ``proctor gateway`` (streamable HTTP), an upstream's progress on a call reaches
the agent on the call's own SSE stream: each report under the agent's token, in the
order the upstream wrote them, all before the answer, and a report under a token the
call did not give is not passed on. Read off the wire (the SDK's client would hand each
report to its callback in a task of its own, which says nothing of the order sent)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx2
import pytest

from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from tests.conftest import sqlite_only
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway

pytestmark = pytest.mark.anyio

STEPS = 200
ACCEPT = {"Accept": "application/json, text/event-stream"}


async def _events(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response, in the order they were sent."""
    messages: list[dict[str, Any]] = []
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            messages.append(json.loads("\n".join(data)))
            data.clear()
    return messages


@sqlite_only  # the order on the agent's stream is the subject, alike on both backends
async def test_progress_reaches_the_agent_on_the_calls_sse_stream_in_order_before_the_answer(
        deployment: Deployment) -> None:
    auth = GrantAuth(deployment.grant().token, deployment.key, SystemClock())
    async with http_gateway(deployment) as public, httpx2.AsyncClient(
            auth=auth, timeout=WAIT, headers=ACCEPT) as http:
        endpoint = f"{public}/mcp/test"
        opened = await http.post(endpoint, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "progress-test", "version": "1"}}})
        assert opened.status_code == 200, opened.text
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"],
                   "MCP-Protocol-Version": "2025-06-18"}
        initialized = await http.post(endpoint, headers=session, json={
            "jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202
        for call in range(2):
            token = f"agent-token-{call}"
            with anyio.fail_after(WAIT):
                async with http.stream("POST", endpoint, headers=session, json={
                        "jsonrpc": "2.0", "id": f"call-{call}", "method": "tools/call",
                        "params": {"name": "steps", "arguments": {"count": STEPS},
                                   "_meta": {"progressToken": token}}}) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    messages = await _events(response)
            *reports, answer = messages
            assert answer["id"] == f"call-{call}" and "result" in answer, answer
            assert answer["result"]["content"][0]["text"] == f"reported {STEPS} steps"
            assert {m.get("method") for m in reports} == {"notifications/progress"}
            assert {m["params"]["progressToken"] for m in reports} == {token}
            steps = [(m["params"]["progress"], m["params"].get("message")) for m in reports]
            assert steps == [(n, f"step {n}") for n in range(STEPS)], (
                f"call {call}: {len(steps)} reports before the answer")
