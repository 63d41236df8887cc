"""The HTTP gateway in process, driven step by step: on a frozen clock (its watch polls,
and a session grows idle, only when the test moves the clock), in front of an upstream
that starts only when the test opens its gate, so that the watch's checks run exactly
while a call is bound to its session and connecting to the upstream."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types as types
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from proctor.cli.gateway import present_manifest, server_name_for
from proctor.clock import FrozenClock
from proctor.errors import ProctorError
from proctor.gateway import (
    Gateway,
    GatewayConfig,
    GatewaySession,
    GrantAuth,
    LaunchCredentials,
    UpstreamConfig,
    load_gateway_config,
    run_wrapper,
)
from proctor.gateway.http import build_http_app
from proctor.gateway.stdio import PipeReader, PipeWriter
from proctor.grants import IssuedGrant
from proctor.grants.proofs import PrivateKey
from proctor.identity import load_manifest
from proctor.oversight import OutputGuard
from proctor.runtime import open_runtime
from proctor.server.asgi import NoDelayHttpToolsProtocol
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


def listening_socket() -> socket.socket:
    """A socket on loopback, listening on a port the OS chose; requests wait in its backlog
    until a server serves it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@asynccontextmanager
async def served(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    """``app`` served by uvicorn on ``sock`` in this event loop, until the block ends."""
    # the protocol `proctor gateway` runs (httptools with proctor's limits and refusals)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           http=NoDelayHttpToolsProtocol))
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.serve, [sock])
            try:
                yield
            finally:
                server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def gateway_on(deployment: Deployment, clock: FrozenClock, gate: Gate | None, *,
                     test: UpstreamConfig | None = None) -> AsyncIterator[tuple[str, Gateway]]:
    """``proctor gateway`` in process on ``clock``, in front of the test upstream: gated
    (``test``; or ``test`` as given) and not (``plain``)."""
    runtime = open_runtime(deployment.settings, clock=clock)
    sock = listening_socket()
    public = url_of(sock)
    if test is None:
        assert gate is not None
        test = gate.upstream()
    config = GatewayConfig(
        upstreams={"test": test,
                   "plain": UpstreamConfig(name="plain", command=tuple(UPSTREAM),
                                           cwd=str(ROOT))},
        public_url=public, listen=public.removeprefix("http://"),
        connect_timeout_seconds=WAIT, revocation_poll_seconds=POLL, session_idle_seconds=IDLE)
    gateway = Gateway.on(runtime, config)
    try:
        async with served(build_http_app(gateway), sock):
            yield public, gateway
    finally:
        runtime.close()


@asynccontextmanager
async def http_gateway(deployment: Deployment, upstream: list[str] = UPSTREAM,
                       settings: dict[str, Any] | None = None,
                       built: list[Any] | None = None) -> AsyncIterator[str]:
    """``proctor gateway`` in process on the deployment's runtime, in front of
    ``upstream`` (server ``test``), with ``settings`` in its config's ``gateway``; yields
    its public URL (and puts its app in ``built``, if given). The socket listens before
    the server starts, so nothing waits for it to be up."""
    sock = listening_socket()
    public = url_of(sock)
    config = load_gateway_config(deployment.config({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://"),
                    **(settings or {})},
        "upstreams": {"test": {"command": upstream}}}))
    app = build_http_app(Gateway.on(deployment.runtime, config))
    if built is not None:
        built.append(app)
    async with served(app, sock):
        yield public


@asynccontextmanager
async def gateway_from(deployment: Deployment, config: Path, sock: socket.socket
                       ) -> AsyncIterator[Gateway]:
    """``proctor gateway --config CONFIG`` in process, on ``sock`` (the config's ``listen``):
    its own runtime on the deployment's home, the store for hearing revocations, the
    system clock. The command itself is run as a process in
    ``tests/e2e/test_gateway_http.py``."""
    runtime = open_runtime(deployment.settings)
    try:
        gateway = Gateway.on(runtime, load_gateway_config(config))
        async with served(build_http_app(gateway, store=runtime.store), sock):
            yield gateway
    finally:
        runtime.close()


@asynccontextmanager
async def agent(endpoint: str, grant: IssuedGrant, deployment: Deployment, clock: FrozenClock,
                *, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    auth = GrantAuth(grant.token, deployment.key, clock)
    async with httpx2.AsyncClient(auth=auth, timeout=WAIT, headers=headers) as http, \
            streamable_http_client(endpoint, http_client=http) as (read, write), \
            ClientSession(read, write) as session:
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


@asynccontextmanager
async def wrapped(deployment: Deployment, grant: IssuedGrant, upstream: list[str], *,
                  config: Path | None = None, server: str | None = None,
                  agent: str | None = None, manifest: Path | None = None,
                  key: PrivateKey | None = None, wire: list[types.JSONRPCMessage] | None = None,
                  errlog: TextIO | None = None) -> AsyncIterator[ClientSession]:
    """``proctor mcp wrap`` in process: the wrapper the command line builds (its own
    runtime, the config with the command after ``--``, the grant and the agent's key),
    serving the agent (``agent``, by default the grant's) over a pair of real pipes, and
    an MCP client on their other ends; with ``manifest`` (``--manifest``), the file is
    measured now and presented at session open, as the command does; ``key`` in place
    of the agent's own (``--key-file``); ``wire`` gets every message the wrapper writes,
    in the order of its lines (before the client sees it); ``errlog``, the gateway's error
    log (its upstreams' stderr goes there, redacted). A wrapper that
    cannot start raises its :class:`ProctorError`, the one the command line prints.

    What the command line itself does (options, exit codes, stdio claimed from the
    process) is tested through real processes in ``tests/e2e/test_gateway_stdio.py`` and
    ``tests/gateway/test_wrap_bad_input.py``."""
    document = load_gateway_config(config) if config is not None else GatewayConfig()
    name = server or server_name_for(upstream)
    spec = document.upstreams.get(name) or UpstreamConfig(name=name)
    if upstream:
        spec = dc_replace(spec, command=tuple(upstream), url=None)
    # the wrapper's upstream runs where the wrapper does: in the repository (the tests'
    # upstreams are modules of it)
    spec = dc_replace(spec, cwd=spec.cwd or str(ROOT))
    document = dc_replace(document, upstreams={**document.upstreams, name: spec})
    presented = load_manifest(manifest) if manifest is not None else None
    runtime = open_runtime(deployment.settings)
    gateway = Gateway.on(runtime, document, errlog=errlog)
    creds = LaunchCredentials(grant.token, key if key is not None else deployment.key)
    agent_id = agent or grant.claims.agent_id
    to_wrapper, from_wrapper = os.pipe(), os.pipe()
    reader, writer = PipeReader(from_wrapper[0]), PipeWriter(to_wrapper[1])
    incoming, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, outgoing = anyio.create_memory_object_stream[SessionMessage](0)

    async def wrapper() -> None:
        try:
            await run_wrapper(gateway, server=name, agent_id=agent_id, creds=creds,
                              reader=PipeReader(to_wrapper[0]),
                              writer=PipeWriter(from_wrapper[1]), store=runtime.store,
                              on_open=None if presented is None else
                              lambda: present_manifest(runtime, agent_id, presented))
        finally:
            runtime.close()

    async def from_agent() -> None:  # the client's messages, one line each
        async with outgoing:
            async for message in outgoing:
                line = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await writer.send(line.encode() + b"\n")
                except OSError:
                    break
        await writer.aclose()

    async def to_agent() -> None:  # the wrapper's lines, as messages
        buffer = b""
        async with incoming:
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError,
                                     anyio.BrokenResourceError):
                while True:
                    buffer += await reader.receive()
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        message = types.jsonrpc_message_adapter.validate_json(line)
                        if wire is not None:
                            wire.append(message)
                        await incoming.send(SessionMessage(message))
        await reader.aclose()

    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wrapper)
                tasks.start_soon(from_agent)
                tasks.start_soon(to_agent)
                async with ClientSession(read_stream, write_stream) as session:
                    await session.initialize()
                    yield session
                write_stream.close()  # the agent hangs up: the wrapper ends its session
    except BaseExceptionGroup as group:
        refused = _only_proctor_error(group)
        if refused is None:
            raise
        raise refused from None


def _only_proctor_error(group: BaseExceptionGroup[BaseException]) -> ProctorError | None:
    """The group's one exception if it is a :class:`ProctorError` (the wrapper refused)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        else:
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 and isinstance(leaves[0], ProctorError) else None


def tools_listed(*names: str) -> Callable[[Any, Any], Awaitable[types.ListToolsResult]]:
    """A low-level server's ``on_list_tools``: tools ``names``, each taking any object."""
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(
            name=name, description=name, input_schema={"type": "object"}) for name in names])
    return list_tools


def http_app_before(deployment: Deployment, server: str, upstream: socket.socket,
                    **parts: Any) -> tuple[Any, socket.socket, str]:
    """The HTTP gateway's app on the deployment's runtime, in front of the upstream
    served over HTTP on ``upstream`` (as ``server``), with ``parts`` of the gateway
    given (``guard``, ``pins``: an output guard of its own, none by default); the
    gateway's listening socket and public URL."""
    sock = listening_socket()
    public = url_of(sock)
    config = load_gateway_config(deployment.config({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://")},
        "upstreams": {server: {"url": f"{url_of(upstream)}/mcp"}}}))
    runtime = deployment.runtime
    given: dict[str, Any] = {"guard": OutputGuard(), **parts}
    app = build_http_app(Gateway(
        config, enforcer=runtime.enforcer, grants=runtime.grants, engine=runtime.engine,
        audit=runtime.audit, store=runtime.store, clock=runtime.clock,
        secrets=runtime.secrets, tools=runtime.tools, **given))
    return app, sock, public
