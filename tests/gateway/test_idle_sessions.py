"""A request holds its gateway session from the moment it is bound to it until it is
answered: the HTTP gateway's idle close never lands under a call, while a revocation or
an expiry still fails it.

Driven step by step, with no timing luck: the gateway runs in process on a frozen clock
(its watch polls, and a session grows idle, only when the test moves the clock), and the
upstream starts only when the test opens its gate, so the watch's checks run exactly
while a call is bound to its session and connecting to the upstream.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proctor.cli.gateway import make_gateway
from proctor.cli.runtime import open_runtime
from proctor.clock import FrozenClock, SystemClock
from proctor.gateway import Gateway, GatewayConfig, GatewaySession, GrantAuth, UpstreamConfig
from proctor.gateway.http import build_http_app
from proctor.grants import IssuedGrant
from tests.gateway.conftest import ROOT, UPSTREAM, WAIT, Deployment

pytestmark = pytest.mark.anyio

# The clock is frozen: the watch polls and a session grows idle only when the test moves
# it. The idle time is short, so that one measured by any other clock would pass too.
POLL, IDLE = 1.0, 0.001


class Gate:
    """A named pipe the upstream's command reads a line from before it starts."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "gate"
        os.mkfifo(self.path)

    @property
    def command(self) -> tuple[str, ...]:
        return ("sh", "-c", 'read go < "$0" && exec "$@"', str(self.path), *UPSTREAM)

    @asynccontextmanager
    async def upstream_waiting(self) -> AsyncIterator[None]:
        """Waits until an upstream is started and waits at the gate (so a request is bound
        to its session and connecting); lets it through when the block ends."""
        pipe = await anyio.to_thread.run_sync(lambda: self.path.open("w"),
                                              abandon_on_cancel=True)
        try:
            yield
        finally:
            pipe.write("go\n")
            pipe.close()


@asynccontextmanager
async def gateway_on(deployment: Deployment, clock: FrozenClock, gate: Gate
                     ) -> AsyncIterator[tuple[str, Gateway]]:
    """``proctor gateway`` in process on ``clock``, in front of the test upstream: gated
    (``test``) and not (``plain``)."""
    runtime = open_runtime(deployment.settings, clock=clock)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # requests wait in the backlog until uvicorn serves them
    public = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = GatewayConfig(
        upstreams={"test": UpstreamConfig(name="test", command=gate.command, cwd=str(ROOT)),
                   "plain": UpstreamConfig(name="plain", command=tuple(UPSTREAM),
                                           cwd=str(ROOT))},
        public_url=public, listen=public.removeprefix("http://"),
        connect_timeout_seconds=WAIT, revocation_poll_seconds=POLL, session_idle_seconds=IDLE)
    gateway = make_gateway(runtime, deployment.settings, config)
    server = uvicorn.Server(uvicorn.Config(build_http_app(gateway), log_level="warning",
                                           lifespan="on"))
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve, [sock])
            try:
                yield public, gateway
            finally:
                server.should_exit = True
    finally:
        sock.close()
        runtime.close()


@asynccontextmanager
async def agent(endpoint: str, grant: IssuedGrant, deployment: Deployment, clock: FrozenClock
                ) -> AsyncIterator[ClientSession]:
    auth = GrantAuth(grant.token, deployment.key, clock)
    async with httpx2.AsyncClient(auth=auth, timeout=WAIT) as http, streamable_http_client(
            endpoint, http_client=http) as (read, write), ClientSession(
            read, write) as session:
        await session.initialize()
        yield session


def session_of(gateway: Gateway, grant: IssuedGrant) -> GatewaySession:
    [found] = [s for s in gateway.sessions.values() if s.claims.grant_id == grant.claims.grant_id]
    return found


async def echo_through_gate(client: ClientSession, gate: Gate, text: str,
                            meanwhile: Callable[[], Awaitable[None]]) -> Any:
    """Call ``echo``; while the call is bound and its upstream waits at the gate, run
    ``meanwhile``. The call's result, or the error it failed with."""
    outcome: dict[str, Any] = {}

    async def call() -> None:
        try:
            outcome["result"] = await client.call_tool("echo", {"text": text})
        except MCPError as exc:
            outcome["result"] = exc

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        async with gate.upstream_waiting():
            await meanwhile()
    return outcome["result"]


async def test_an_idle_check_while_a_call_is_bound_and_connecting_leaves_its_session_open(
        deployment: Deployment, tmp_path: Path) -> None:
    grant, bystander_grant = deployment.grant(), deployment.grant()
    clock = FrozenClock(SystemClock().now())
    gate = Gate(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client, agent(
                f"{public}/mcp/plain", bystander_grant, deployment, clock) as bystander:
            await bystander.list_tools()  # its session will sit idle
            idle = session_of(gateway, bystander_grant)

            bound: list[GatewaySession] = []

            async def idle_check() -> None:
                bound.append(session_of(gateway, grant))
                clock.advance(seconds=POLL + IDLE)
                await idle.closed.wait()  # the watch has run its idle check since

            result = await echo_through_gate(client, gate, "held", idle_check)
            assert idle.close_reason == "idle"
            assert not isinstance(result, MCPError), result.error.message
            assert result.structured_content == {"text": "held", "count": 1}
            first = session_of(gateway, grant)
            assert first is bound[0] and not first.closed.is_set()

            # answered, the session grows idle and closes; the agent's MCP session goes on
            # and its next call opens a new gateway session
            clock.advance(seconds=POLL + IDLE)
            await first.closed.wait()
            assert first.close_reason == "idle"
            again = await echo_through_gate(client, gate, "again", anyio.lowlevel.checkpoint)
            assert not isinstance(again, MCPError), again.error.message
            assert session_of(gateway, grant).id != first.id


@pytest.mark.parametrize("ending", ["revoked", "expired"])
async def test_a_call_bound_to_its_session_still_fails_when_its_grant_ends_meanwhile(
        deployment: Deployment, tmp_path: Path, ending: str) -> None:
    grant = deployment.grant(ttl=600)
    clock = FrozenClock(SystemClock().now())
    gate = Gate(tmp_path)
    ended: list[GatewaySession] = []
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client:

            async def end_grant() -> None:
                session = session_of(gateway, grant)
                ended.append(session)
                if ending == "revoked":
                    await anyio.to_thread.run_sync(gateway.grants.revoke, grant.accessor,
                                                   "incident 12")
                else:
                    clock.advance(seconds=600 + POLL)
                await session.closed.wait()

            result = await echo_through_gate(client, gate, "too late", end_grant)
    # the grant's MCP session is terminated under the call: it fails without an answer
    assert isinstance(result, MCPError)
    assert ended[0].close_reason == {"revoked": "grant revoked (incident 12)",
                                     "expired": "grant expired"}[ending]


async def test_an_upstream_that_connects_after_its_session_closed_ends_with_the_session(
        deployment: Deployment, tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    config = GatewayConfig(upstreams={"test": UpstreamConfig(
        name="test", command=gate.command, cwd=str(ROOT))}, connect_timeout_seconds=WAIT)
    gateway = make_gateway(deployment.runtime, deployment.settings, config)
    claims = deployment.runtime.grants.inspect(deployment.grant().token)
    failure: list[MCPError] = []

    async def connect(session: GatewaySession) -> None:
        try:
            await session.upstream("test")
        except MCPError as exc:
            failure.append(exc)

    with anyio.fail_after(WAIT):
        # the task group ends only once the session's run (and every upstream) has ended
        async with anyio.create_task_group() as tasks:
            session = await gateway.open_session(claims, tasks)
            async with anyio.create_task_group() as calls:
                calls.start_soon(connect, session)
                async with gate.upstream_waiting():
                    session.close("grant revoked (incident 12)")
    assert [e.error.data["reason"] for e in failure] == ["session_closed"]
    assert "grant revoked (incident 12)" in failure[0].error.message
