"""Resource subscriptions through ``proctor gateway``, per agent session: the MCP sessions
of one grant share its upstream connection, yet each hears only the updates it asked
for, and one's unsubscribe does not end another's subscription upstream. Told by a real
server that keeps subscriptions per connection (``tests/gateway/leaky_upstream.py``):
its tool ``touch`` sends an update only if the gateway's connection follows the URI."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server

from proctor.clock import SystemClock
from proctor.gateway import Gateway, GrantAuth, load_gateway_config
from proctor.gateway.http import build_http_app
from proctor.grants import IssuedGrant
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.eager_upstream import URI as NEWS
from tests.gateway.eager_upstream import create_server as create_eager
from tests.gateway.in_process import http_gateway, listening_socket, served, url_of

pytestmark = pytest.mark.anyio

LEAKY = [sys.executable, "-m", "tests.gateway.leaky_upstream"]
README = "notes://readme"


class Agent:
    """One MCP session on the gateway and the resource updates it has heard."""

    def __init__(self, client: ClientSession, heard: list[str], news: list[anyio.Event]
                 ) -> None:
        self.client = client
        self.heard = heard
        self._news = news

    async def follow(self, uri: str, *, on: bool = True) -> None:
        request: Any = (types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
                        if on else types.UnsubscribeRequest(
                            params=types.UnsubscribeRequestParams(uri=uri)))
        await self.client.send_request(request, types.EmptyResult)

    async def touch(self, uri: str) -> str:
        """What the upstream did on ``touch``: ``sent`` (this session's connection follows
        ``uri``) or ``not subscribed``."""
        result = await self.client.call_tool("touch", {"uri": uri})
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        return block.text

    async def hears(self, count: int) -> None:
        """Wait until this agent has heard ``count`` updates in all."""
        with anyio.fail_after(WAIT):
            while len(self.heard) < count:
                self._news[0] = anyio.Event()
                if len(self.heard) >= count:
                    break
                await self._news[0].wait()


@asynccontextmanager
async def connect_agent(stack: AsyncExitStack, endpoint: str, grant: IssuedGrant,
                 deployment: Deployment) -> AsyncIterator[Agent]:
    heard: list[str] = []
    news = [anyio.Event()]

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            heard.append(str(message.params.uri))
            news[0].set()

    auth = GrantAuth(grant.token, deployment.key, SystemClock())
    http = await stack.enter_async_context(httpx2.AsyncClient(auth=auth, timeout=WAIT))
    read, write = await stack.enter_async_context(
        streamable_http_client(endpoint, http_client=http))
    client = await stack.enter_async_context(
        ClientSession(read, write, message_handler=on_message))
    with anyio.fail_after(WAIT):
        await client.initialize()
    yield Agent(client, heard, news)


async def test_each_agent_session_hears_what_it_follows_and_an_unsubscribe_ends_only_its_own(
        deployment: Deployment) -> None:
    grant, other_grant = deployment.grant(), deployment.grant()
    async with http_gateway(deployment, LEAKY) as public, AsyncExitStack() as stack:
        endpoint = f"{public}/mcp/test"
        first = await stack.enter_async_context(connect_agent(stack, endpoint, grant, deployment))
        second = await stack.enter_async_context(connect_agent(stack, endpoint, grant, deployment))
        other = await stack.enter_async_context(
            connect_agent(stack, endpoint, other_grant, deployment))
        for agent in (first, second, other):
            await agent.follow(README)
        await second.follow(README)  # twice: one subscription all the same

        # the first session stops following: the second (same grant, same upstream
        # connection) still does, so the upstream still sends its updates
        await first.follow(README, on=False)
        assert await second.touch(README) == "sent"
        await second.hears(1)
        # an unsubscribe of what a session never followed ends nobody's subscription
        await first.follow("notes://readme", on=False)
        assert await first.touch(README) == "sent"
        await second.hears(2)
        assert first.heard == []
        assert second.heard == [README, README]

        # another grant has its own connection: its updates are its own
        assert await other.touch(README) == "sent"
        await other.hears(1)
        assert second.heard == [README, README]

        # the other grant revoked: its session ends, the first grant's hear on
        deployment.runtime.grants.revoke(other_grant.grant_id, "done")
        await second.follow(README, on=False)
        assert await second.touch(README) == "not subscribed"
        await first.follow(README)
        assert await first.touch(README) == "sent"
        await first.hears(1)
        assert (first.heard, second.heard, other.heard) == ([README], [README] * 2, [README])


def _stalling_upstream(entered: anyio.Event, release: anyio.Event) -> Server[Any]:
    """An upstream whose ``resources/subscribe`` answers only once ``release`` is set."""
    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        entered.set()
        await release.wait()
        return types.EmptyResult()

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(uri=SLOW, name="slow")])

    return Server("proctor-stalling-upstream", version="1.0.0",
                  on_list_resources=list_resources, on_subscribe_resource=subscribe)


SLOW = "slow://forever"


async def test_a_subscribe_an_upstream_stalls_holds_up_no_other_follow_of_the_grant(
        deployment: Deployment) -> None:
    """The follows of one grant's sessions were changed under one lock held across the
    upstream's answer: one upstream that does not answer a subscribe (slow, or hostile)
    held every other session's follow and unfollow, of every upstream, until the call
    timed out. Now only what follows the same resource of the same upstream waits."""
    grant = deployment.grant([{"tool": "test/*"}, {"tool": "conf/*"}])
    entered, release = anyio.Event(), anyio.Event()
    stalling = listening_socket()
    gateway = listening_socket()
    public = url_of(gateway)
    config = load_gateway_config(deployment.config({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://"),
                    "call_timeout_seconds": 3600},
        "upstreams": {"test": {"command": LEAKY},
                      "conf": {"url": f"{url_of(stalling)}/mcp"}}}))
    app = build_http_app(Gateway.on(deployment.runtime, config))
    with anyio.fail_after(WAIT):
        async with served(_stalling_upstream(entered, release).streamable_http_app(),
                          stalling), served(app, gateway), AsyncExitStack() as stack:
            waiting = await stack.enter_async_context(
                connect_agent(stack, f"{public}/mcp/conf", grant, deployment))
            other = await stack.enter_async_context(
                connect_agent(stack, f"{public}/mcp/test", grant, deployment))
            await other.touch(README)  # the test upstream started: its session is up
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(waiting.follow, SLOW)
                await entered.wait()  # the stalling upstream holds that subscribe
                # the same grant's other session follows, and stops, on another upstream
                await other.follow(README)
                assert await other.touch(README) == "sent"
                await other.follow(README, on=False)
                assert await other.touch(README) == "not subscribed"
                release.set()



@pytest.mark.parametrize("over", ["http", "stdio"])
async def test_an_update_sent_before_the_subscribe_is_answered_holds_nothing_up(
        deployment: Deployment, over: str) -> None:
    """An update of a resource whose subscribe is pending finds nobody following it yet;
    ending the subscription nobody follows (Follows.unfollowed) waits for that
    subscribe's hold, and must not hold up the upstream's messages, the subscribe's
    answer among them: it does not, since the SDK's dispatcher handles each
    notification in a task of its own (were it handled inline, the answer would never
    be read: this test would time out)."""
    grant = deployment.grant([{"tool": "conf/*"}])
    eager = listening_socket()
    gateway = listening_socket()
    public = url_of(gateway)
    upstream = ({"url": f"{url_of(eager)}/mcp"} if over == "http"
                else {"command": [sys.executable, "-m", "tests.gateway.eager_upstream"]})
    config = load_gateway_config(deployment.config({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://"),
                    "call_timeout_seconds": 3600},
        "upstreams": {"conf": upstream}}))
    app = build_http_app(Gateway.on(deployment.runtime, config))
    with anyio.fail_after(WAIT):
        async with served(create_eager().streamable_http_app(), eager), \
                served(app, gateway), AsyncExitStack() as stack:
            agent = await stack.enter_async_context(
                connect_agent(stack, f"{public}/mcp/conf", grant, deployment))
            await agent.follow(NEWS)
            await agent.follow(NEWS, on=False)
