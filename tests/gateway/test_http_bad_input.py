"""Bad input to the HTTP gateway gets a JSON-RPC error and the gateway goes on. The
gateway runs in this process on a real socket (the process boundary is not what is
tested here), in front of the tests' server over stdio."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway

pytestmark = pytest.mark.anyio


async def test_a_deeply_nested_body_is_refused_and_the_session_goes_on(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, httpx2.AsyncClient(
                auth=auth, timeout=WAIT) as http, streamable_http_client(
                f"{public}/mcp/test", http_client=http) as (read, write), ClientSession(
                read, write) as session:
            await session.initialize()
            headers = {"Content-Type": "application/json",
                       "Accept": "application/json, text/event-stream"}
            for depth in (100, 3000):  # past the cap, and past the SDK's parser too
                deep = await http.post(f"{public}/mcp/test", headers=headers, content=(
                    b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": '
                    b'{"name": "echo", "arguments": {"text": ' + b"[" * depth + b"]" * depth
                    + b"}}}"))
                assert deep.status_code == 400, deep.text
                assert deep.json() == {"jsonrpc": "2.0", "id": 7, "error": {
                    "code": -32600, "message": "message_too_deep: a message may nest at "
                    "most 64 levels", "data": {"reason": "message_too_deep",
                                               "max_depth": 64}}}
            echoed = await session.call_tool("echo", {"text": "still here"})
            assert echoed.structured_content == {"text": "still here", "count": 1}
