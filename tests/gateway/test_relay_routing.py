"""What an upstream sends during a call (a log line, an elicitation) reaches that call's
agent or nobody: the MCP sessions of one grant share its upstream connections, and with
two calls in flight on one upstream a line of the first call must not reach the agent
of the second (it could carry the first call's data). Told by a real server whose calls
wait for the test (``tests/gateway/routing_upstream.py``), through the real HTTP gateway
in front of it over stdio and over streamable HTTP (a log line on a call's own answer
stream is relayed to that call's agent); what cannot be told to be one call's is dropped
(a request refused and audited); on both databases."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
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
from proctor.grants import IssuedGrant
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import gateway_from, listening_socket, served, url_of
from tests.gateway.routing_upstream import create_server

pytestmark = pytest.mark.anyio

ROUTING = [sys.executable, "-m", "tests.gateway.routing_upstream"]


class Agent:
    """One MCP session on the gateway, and the log lines and questions it was sent."""

    def __init__(self, client: ClientSession, lines: list[Any], asked: list[str]) -> None:
        self.client, self.lines, self.asked = client, lines, asked


@asynccontextmanager
async def _gateway(deployment: Deployment, over: str) -> AsyncIterator[str]:
    """The HTTP gateway in front of the routing upstream (``over`` stdio or http); its
    public URL."""
    sock = listening_socket()
    async with AsyncExitStack() as stack:
        if over == "stdio":
            upstream: dict[str, Any] = {"command": ROUTING}
        else:
            upstream_sock = listening_socket()
            await stack.enter_async_context(
                served(create_server().streamable_http_app(), upstream_sock))
            upstream = {"url": f"{url_of(upstream_sock)}/mcp"}
        config = deployment.config({
            "gateway": {"public_url": url_of(sock), "listen": url_of(sock)[len("http://"):],
                        "authorization_servers": ["https://proctor.acme.example"]},
            "upstreams": {"test": upstream}})
        await stack.enter_async_context(gateway_from(deployment, config, sock))
        yield url_of(sock)


async def _agent(stack: AsyncExitStack, endpoint: str, grant: IssuedGrant,
                 deployment: Deployment) -> Agent:
    lines: list[Any] = []
    asked: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        lines.append(params.data)

    async def on_elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="decline")

    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    http = await stack.enter_async_context(httpx2.AsyncClient(auth=auth, timeout=WAIT))
    read, write = await stack.enter_async_context(
        streamable_http_client(endpoint, http_client=http))
    client = await stack.enter_async_context(ClientSession(
        read, write, logging_callback=on_log, elicitation_callback=on_elicit))
    await client.initialize()
    return Agent(client, lines, asked)


async def _exists(path: Path) -> None:
    while not path.exists():
        await anyio.sleep(0.01)


def _text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


@pytest.mark.parametrize("over", ["stdio", "http"])
@pytest.mark.parametrize("ask", [0, 1, 20], ids=["log", "ask", "ask-20-times"])
async def test_a_calls_log_and_question_never_reach_another_calls_agent(
        deployment: Deployment, over: str, ask: int) -> None:
    grant = deployment.grant([{"tool": "test/*"}])
    line = f"the first call's data {secrets.token_hex(8)}"
    tmp = deployment.tmp
    told: dict[str, str] = {}
    async with _gateway(deployment, over) as public, AsyncExitStack() as stack:
        endpoint = f"{public}/mcp/test"
        first = await _agent(stack, endpoint, grant, deployment)
        second = await _agent(stack, endpoint, grant, deployment)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                async def tell() -> None:
                    told["first"] = _text(await first.client.call_tool("tell", {
                        "started": str(tmp / "s1"), "gate": str(tmp / "g1"), "line": line,
                        "ask": ask}))

                async def wait() -> None:
                    told["second"] = _text(await second.client.call_tool("wait", {
                        "started": str(tmp / "s2"), "gate": str(tmp / "g2")}))

                tasks.start_soon(tell)
                await _exists(tmp / "s1")
                tasks.start_soon(wait)  # the newer call in flight on the same upstream
                await _exists(tmp / "s2")
                (tmp / "g1").touch()  # the first call logs (and asks) now
                while "first" not in told:
                    await anyio.sleep(0.01)
                (tmp / "g2").touch()
        assert told["second"] == "waited"
        assert line not in second.lines
        assert second.asked == []
        # a line on the call's own answer stream is its own agent's; else whose it is
        # cannot be told: nobody hears it, and a question is refused
        assert (line in first.lines) is (over == "http")
        assert first.asked == []
        assert told["first"] == ("told (refused -32600)" if ask else "told")
    if ask:  # audited once however many are refused: a flood does not flood the log
        [refused] = [e.event for e in search_events(
            deployment.runtime.store, EventFilter(action="gateway.upstream_request"),
            newest_first=False, limit=10)]
        assert (refused["outcome"], refused["detail"]["reason"],
                refused["detail"]["method"]) == ("refused", "unattributed",
                                                  "elicitation/create")
