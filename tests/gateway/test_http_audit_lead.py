"""The HTTP gateway's event loop writes its calls' audit batch itself only while it
serves one call: with two calls in flight, a lone event's write (its effects' SQL, the
commit's fsync) on the loop would stall the other call behind it."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp.server import Server

from proctor.clock import FrozenClock, SystemClock
from proctor.gateway import Gateway, load_gateway_config
from proctor.gateway.http import build_http_app
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import agent, listening_socket, served, tools_listed, url_of

pytestmark = pytest.mark.anyio


class Quiet:
    """ASGI middleware around the gateway: the POSTs it is serving, and an event set
    whenever none is. The MCP client posts a notification without waiting for its
    answer, and reads a call's answer before the gateway's handler has returned, so
    "one call at a time" holds only once the gateway has let go of every request."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._serving = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self._app(scope, receive, send)
            return
        self._serving += 1
        self.idle.clear()
        try:
            await self._app(scope, receive, send)
        finally:
            self._serving -= 1
            if not self._serving:
                self.idle.set()


def _upstream(entered: anyio.Event, release: anyio.Event) -> Server[Any]:
    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name == "held":
            entered.set()
            await release.wait()
        return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])

    return Server("proctor-held", version="1.0.0", on_list_tools=tools_listed("held", "plain"),
                  on_call_tool=call_tool)


async def test_the_loop_leads_its_audit_write_only_while_it_serves_one_call(
        deployment: Deployment) -> None:
    audit = deployment.runtime.audit
    leads: list[bool] = []
    lead_on = audit.lead_on

    def watched(loop: asyncio.AbstractEventLoop | None) -> None:  # the writer's own, seen
        leads.append(loop is not None)
        lead_on(loop)

    audit.lead_on = watched  # type: ignore[method-assign]
    entered, release = anyio.Event(), anyio.Event()
    upstream, gateway = listening_socket(), listening_socket()
    public = url_of(gateway)
    config = load_gateway_config(deployment.config({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://")},
        "upstreams": {"test": {"url": f"{url_of(upstream)}/mcp"}}}))
    app = Quiet(build_http_app(Gateway.on(deployment.runtime, config)))
    clock = FrozenClock(SystemClock().now())
    try:
        with anyio.fail_after(WAIT):
            async with served(_upstream(entered, release).streamable_http_app(), upstream), \
                    served(app, gateway), \
                    agent(f"{public}/mcp/test", deployment.grant([{"tool": "test/*"}]),
                          deployment, clock) as first, \
                    agent(f"{public}/mcp/test", deployment.grant([{"tool": "test/*"}]),
                          deployment, clock) as second:
                await app.idle.wait()  # the clients' notifications served
                assert leads[-1]  # one call at a time: the loop leads
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(first.call_tool, "held", {})
                    await entered.wait()
                    mark = len(leads)
                    assert not (await second.call_tool("plain", {})).is_error
                    # the second call came with the first in flight: its write went to
                    # the writer thread (the client may post again after it, alike)
                    assert leads[mark] is False
                    release.set()
                await app.idle.wait()
                # one call in flight at most again: the loop leads
                assert leads[-1] is True
    finally:
        audit.lead_on = lead_on  # type: ignore[method-assign]
    assert leads[-1] is False  # stopped with the gateway
