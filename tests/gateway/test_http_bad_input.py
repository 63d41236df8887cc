"""Bad input to the HTTP gateway gets a JSON-RPC error and the gateway goes on. The
gateway runs in this process on a real socket (the process boundary is not what is
tested here), in front of the tests' server over stdio."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.clock import SystemClock
from proctor.gateway import Gateway, GrantAuth, load_gateway_config
from proctor.gateway.http import build_http_app
from tests.gateway.conftest import UPSTREAM, WAIT, Deployment

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def http_gateway(deployment: Deployment) -> AsyncIterator[str]:
    """``proctor gateway`` in front of the tests' server; yields its public URL. The
    socket listens before the server starts, so nothing waits for it to be up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        public = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = load_gateway_config(deployment.config({
            "gateway": {"public_url": public, "listen": public.removeprefix("http://")},
            "upstreams": {"test": {"command": UPSTREAM}}}))
        app = build_http_app(Gateway.on(deployment.runtime, config))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http="h11",
                                               timeout_graceful_shutdown=WAIT))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve, [sock])
            try:
                yield public
            finally:
                server.should_exit = True


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
