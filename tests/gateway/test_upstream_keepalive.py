"""An HTTP upstream's connection is reused from call to call (the SDK closes each SSE
answer before its end; proctor.gateway.keepalive reads the rest, bounded), and an
answer that never ends is closed, not waited on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from proctor.gateway import UpstreamConfig
from proctor.gateway.keepalive import keepalive_client
from proctor.gateway.upstream import UpstreamConnection
from tests.gateway.conftest import WAIT
from tests.gateway.in_process import listening_socket, served, url_of

pytestmark = pytest.mark.anyio


def _peer_server() -> MCPServer:
    server = MCPServer("peer-upstream", version="1.0.0")

    @server.tool(name="peer", description="The client's TCP port of this call's connection")
    def peer(ctx: Context) -> int:
        request = ctx.request_context.request
        assert isinstance(request, Request) and request.client is not None
        return request.client.port

    return server


async def test_an_http_upstream_is_called_over_one_connection() -> None:
    sock = listening_socket()
    app = _peer_server().streamable_http_app()
    config = UpstreamConfig(name="peer", url=f"{url_of(sock)}/mcp", pin="off")
    async with served(app, sock), anyio.create_task_group() as tasks:
        connection = UpstreamConnection(config, call_timeout=WAIT)
        with anyio.fail_after(WAIT):
            await tasks.start(connection.serve)
        ports = set()
        for _ in range(4):
            with anyio.fail_after(WAIT):
                result = await connection.call_tool("peer", {})
            assert not result.is_error
            ports.add(result.structured_content["result"])
        connection.close()
    # each SSE answer left its connection to the pool: every call came on the same one
    assert len(ports) == 1


async def _endless(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        port = request.client.port if request.client else 0
        yield f"data: {port}\n\n".encode()
        await anyio.sleep_forever()
    return StreamingResponse(body(), media_type="text/event-stream")


async def test_an_answer_that_never_ends_is_closed_not_waited_on() -> None:
    sock = listening_socket()
    app = Starlette(routes=[Route("/", _endless)])
    ports: list[str] = []
    async with served(app, sock), keepalive_client({}, httpx2.Timeout(WAIT)) as client:
        for _ in range(2):
            with anyio.fail_after(WAIT):
                async with client.stream("GET", url_of(sock)) as response:
                    first: Any = await response.aiter_lines().__anext__()
                    ports.append(first)
    # the open stream could not be read to its end: its connection was dropped
    assert ports[0] != ports[1]
