"""The HTTP gateway in process, driven step by step: on a frozen clock (its watch polls,
and a session grows idle, only when the test moves the clock), in front of an upstream
that starts only when the test opens its gate, so that the watch's checks run exactly
while a call is bound to its session and connecting to the upstream."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proctor.clock import FrozenClock
from proctor.gateway import Gateway, GatewayConfig, GatewaySession, GrantAuth, UpstreamConfig
from proctor.gateway.http import build_http_app
from proctor.grants import IssuedGrant
from proctor.runtime import open_runtime
from tests.gateway.conftest import ROOT, UPSTREAM, WAIT, Deployment

# The watch polls and a session grows idle only when the test moves the frozen clock. The
# idle time is short, so that idleness measured by any other clock would pass too.
POLL, IDLE = 1.0, 0.001


class Gate:
    """A named pipe the upstream's command reads a line from before it starts."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "gate"
        os.mkfifo(self.path)

    @property
    def command(self) -> tuple[str, ...]:
        return ("sh", "-c", 'read go < "$0" && exec "$@"', str(self.path), *UPSTREAM)

    def upstream(self) -> UpstreamConfig:
        """The tests' upstream server, behind this gate."""
        return UpstreamConfig(name="test", command=self.command, cwd=str(ROOT))

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
        upstreams={"test": gate.upstream(),
                   "plain": UpstreamConfig(name="plain", command=tuple(UPSTREAM),
                                           cwd=str(ROOT))},
        public_url=public, listen=public.removeprefix("http://"),
        connect_timeout_seconds=WAIT, revocation_poll_seconds=POLL, session_idle_seconds=IDLE)
    gateway = Gateway.on(runtime, config)
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
