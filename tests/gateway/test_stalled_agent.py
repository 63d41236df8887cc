"""An agent that stops reading its stream holds nobody else up: through ``proctor
gateway``, a call whose upstream (``tests/gateway/leaky_upstream.py``, over stdio)
logs far more than the buffers between it and the agent hold, made by a client whose
socket takes only a few kilobytes and which then reads nothing. The gateway hands each
log on within ``relay_send_timeout_seconds`` or drops it, and audits the drop
(``gateway.relay``); another MCP session of the same grant, whose call shares the
upstream's connection, is answered.

Before, the relay waited for the stalled agent without end: the upstream's reader
stopped, and the other session's call with it."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import pytest

from proctor.audit import EventFilter, search_events
from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway
from tests.gateway.test_subscriptions import LEAKY, README, connect_agent

pytestmark = pytest.mark.anyio

ACCEPT = {"Accept": "application/json, text/event-stream"}
VERSION = "2025-06-18"
# 300 log lines of 32 KiB: ~10 MB, past the socket buffers of loopback (4 MB to send)
# and everything the SDK and uvicorn hold
COUNT, SIZE = 300, 32 * 1024


async def _opened(http: httpx2.AsyncClient, endpoint: str) -> dict[str, str]:
    opened = await http.post(endpoint, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": VERSION, "capabilities": {},
            "clientInfo": {"name": "stalled-agent", "version": "1"}}})
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"],
               "MCP-Protocol-Version": VERSION}
    initialized = await http.post(endpoint, headers=session, json={
        "jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202
    return session


@pytest.mark.parametrize("path", ["direct", "sdk"])
async def test_an_agent_that_stops_reading_is_dropped_and_the_grants_other_session_answered(
        deployment: Deployment, path: str) -> None:
    grant = deployment.grant()
    params: dict[str, Any] = {"name": "flood", "arguments": {"count": COUNT, "size": SIZE}}
    if path == "sdk":  # a progress token takes the call through the SDK's session
        params["_meta"] = {"progressToken": "stalled"}
    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    # a receive buffer of a few KiB: the gateway's sends block soon after the agent stops
    tiny = httpx2.AsyncHTTPTransport(socket_options=[
        (socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    async with http_gateway(deployment, LEAKY, settings={
            "relay_send_timeout_seconds": 1}) as public, AsyncExitStack() as stack:
        endpoint = f"{public}/mcp/test"
        http = await stack.enter_async_context(httpx2.AsyncClient(
            auth=auth, timeout=WAIT, headers=ACCEPT, transport=tiny))
        session = await _opened(http, endpoint)
        # (the client's timeout bounds the wait for the answer's head)
        stalled = await stack.enter_async_context(http.stream(
            "POST", endpoint, headers=session,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}))
        assert stalled.status_code == 200
        # the first log is on its way (the answer is an event stream): the agent reads
        # no more of it, and the gateway gives up on it
        with anyio.fail_after(WAIT):
            while not _dropped(deployment):
                await anyio.sleep(0.05)
        other = await stack.enter_async_context(
            connect_agent(stack, endpoint, grant, deployment))
        with anyio.fail_after(WAIT):
            assert await other.touch(README) == "not subscribed"

    dropped = _dropped(deployment)
    assert [(e.event["outcome"], e.event["target"]) for e in dropped][:1] == [
        ("dropped", "a log message")]
    assert dropped[0].event["detail"]["waited_seconds"] == 1


def _dropped(deployment: Deployment) -> list[Any]:
    """The ``gateway.relay`` events so far (one per stalled stream)."""
    return search_events(deployment.runtime.store, EventFilter(action="gateway.relay"),
                         newest_first=False, limit=10)
