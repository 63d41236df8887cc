"""A resource subscription lasts as long as an agent session follows it, no longer and no
shorter: the upstream stays subscribed while an agent session of the grant follows the
resource (the grant's gateway session is not closed as idle under it, which would stop
the upstream and its subscriptions while the agent still waits for updates), and is
asked to unsubscribe once none does (an agent session that ended, or stalled, without
unsubscribing leaves nobody to hand the updates to). Told by a real server that keeps
subscriptions per connection (``tests/gateway/leaky_upstream.py``: ``touch`` answers
``sent`` only if the gateway's connection follows the URI)."""

from __future__ import annotations

import gc
from contextlib import AsyncExitStack
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession

from proctor.clock import FrozenClock, SystemClock
from proctor.gateway import UpstreamConfig
from tests.conftest import sqlite_only
from tests.gateway.conftest import ROOT, WAIT, Deployment
from tests.gateway.in_process import IDLE, POLL, agent, gateway_on, http_gateway, session_of
from tests.gateway.test_subscriptions import LEAKY, README, connect_agent

pytestmark = pytest.mark.anyio


async def _follow(client: ClientSession, *, on: bool) -> None:
    request: Any = (types.SubscribeRequest(params=types.SubscribeRequestParams(uri=README))
                    if on else types.UnsubscribeRequest(
                        params=types.UnsubscribeRequestParams(uri=README)))
    await client.send_request(request, types.EmptyResult)


@sqlite_only  # the hold and the idle check are in memory, alike on both backends
async def test_a_session_an_agent_follows_a_resource_on_is_not_closed_as_idle(
        deployment: Deployment) -> None:
    grant, bystander_grant = deployment.grant(), deployment.grant()
    clock = FrozenClock(SystemClock().now())
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, None, test=UpstreamConfig(
                name="test", command=tuple(LEAKY), cwd=str(ROOT))) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client, agent(
                f"{public}/mcp/plain", bystander_grant, deployment, clock) as bystander:
            await _follow(client, on=True)
            await bystander.list_tools()  # its session sits idle, and closes
            following, idle = session_of(gateway, grant), session_of(gateway, bystander_grant)
            clock.advance(seconds=POLL + IDLE)
            await idle.closed.wait()  # the watch has run its idle check since
            assert idle.close_reason == "idle"
            assert not following.closed.is_set()
            result = await client.call_tool("touch", {"uri": README})
            assert result.content[0].model_dump()["text"] == "sent"

            # once it follows nothing, the session grows idle as any other
            await _follow(client, on=False)
            clock.advance(seconds=POLL + IDLE)
            await following.closed.wait()
            assert following.close_reason == "idle"


async def test_the_upstream_is_unsubscribed_once_no_agent_session_follows(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    async with http_gateway(deployment, LEAKY) as public, AsyncExitStack() as stack:
        endpoint = f"{public}/mcp/test"
        async with AsyncExitStack() as gone:
            first = await gone.enter_async_context(
                connect_agent(gone, endpoint, grant, deployment))
            await first.follow(README)
        gc.collect()  # the ended session's objects are gone (the gateway runs in process)
        second = await stack.enter_async_context(
            connect_agent(stack, endpoint, grant, deployment))
        # the update the upstream still sends finds nobody: the gateway unsubscribes it
        with anyio.fail_after(WAIT):
            while await second.touch(README) == "sent":
                await anyio.sleep(0.01)
        assert second.heard == []
