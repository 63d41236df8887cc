"""``proctor gateway`` over streamable HTTP: an agent with its grant as a bearer token and a
proof per call, in front of mcp-server-time (stdio) and the tests' server (HTTP),
each under its own path and all under one endpoint with prefixed names.

The first test runs the command as a real process (the tests' HTTP server it is in
front of is served in the test's process), on SQLite; the second runs both in process,
on both backends (on PostgreSQL the gateway also hears
revocations by ``NOTIFY``)."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, search_events
from proctor.clock import SystemClock
from proctor.gateway.client import GrantAuth
from proctor.grants import IssuedGrant
from proctor.sealing import load_master_key
from proctor.secrets import SecretStore
from tests.conftest import sqlite_only
from tests.gateway.conftest import ROOT, TIME, WAIT, Deployment
from tests.gateway.in_process import gateway_from, listening_socket, served, url_of
from tests.gateway.upstream_server import create_server

pytestmark = pytest.mark.anyio



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    with anyio.fail_after(WAIT):
        async with httpx2.AsyncClient() as client:
            while True:
                assert process.poll() is None, "the server exited"
                try:
                    if (await client.get(url)).status_code < 500:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.1)


@asynccontextmanager
async def serving(args: list[str], url: str, env: dict[str, str]) -> AsyncIterator[None]:
    process = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT)
    try:
        await _wait_until_serving(url, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT)


def _config(deployment: Deployment, secret: str, port: int, upstream_port: int) -> Path:
    store = SecretStore(deployment.runtime.store, deployment.runtime.clock,
                        load_master_key(deployment.settings.home))
    store.put("upstream-token", secret, by="erin@acme.example")
    public = f"http://127.0.0.1:{port}"
    return deployment.config({
        "gateway": {"public_url": public, "listen": f"127.0.0.1:{port}",
                    "authorization_servers": ["https://proctor.acme.example"],
                    "revocation_poll_seconds": 0.2, "session_idle_seconds": 1},
        "upstreams": {
            "time": {"command": TIME},
            "test": {"url": f"http://127.0.0.1:{upstream_port}/mcp",
                     "headers": {"Authorization": "Bearer ${secret:upstream-token}"}},
        }})


@asynccontextmanager
async def gateway(deployment: Deployment, secret: str) -> AsyncIterator[str]:
    """``proctor gateway`` as a real process, in front of time and of the tests' server
    over HTTP (served in this process: an HTTP upstream is a URL to the gateway)."""
    upstream_sock, port = listening_socket(), free_port()
    config = _config(deployment, secret, port, upstream_sock.getsockname()[1])
    public = f"http://127.0.0.1:{port}"
    async with served(create_server().streamable_http_app(), upstream_sock), serving(
            [sys.executable, "-m", "proctor.cli", "gateway", "--config", str(config)],
            f"{public}/.well-known/oauth-protected-resource", deployment.env):
        yield public


@asynccontextmanager
async def gateway_in_process(deployment: Deployment, secret: str) -> AsyncIterator[str]:
    """The same, both in this process, on ports the OS chose."""
    upstream_sock, sock = listening_socket(), listening_socket()
    config = _config(deployment, secret, sock.getsockname()[1], upstream_sock.getsockname()[1])
    async with served(create_server().streamable_http_app(), upstream_sock), gateway_from(
            deployment, config, sock):
        yield url_of(sock)


@asynccontextmanager
async def agent(url: str, grant: IssuedGrant | None, deployment: Deployment,
                headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    auth = GrantAuth(grant.token, deployment.key, SystemClock()) if grant else None
    with anyio.fail_after(WAIT):
        async with httpx2.AsyncClient(auth=auth, timeout=WAIT, headers=headers
                                      ) as http, streamable_http_client(
                url, http_client=http) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@sqlite_only
async def test_the_http_gateway_decides_each_call_and_never_passes_the_grant_on(
        deployment: Deployment) -> None:
    secret = "tok_" + secrets.token_urlsafe(24)
    grant = deployment.grant()
    async with gateway(deployment, secret) as public:
        async with httpx2.AsyncClient() as http:
            metadata = (await http.get(
                f"{public}/.well-known/oauth-protected-resource/mcp/time")).json()
            assert metadata["resource"] == f"{public}/mcp/time"
            assert metadata["authorization_servers"] == ["https://proctor.acme.example"]
            refused = await http.post(f"{public}/mcp/time", json={})
            assert refused.status_code == 401
            assert 'resource_metadata="' in refused.headers["www-authenticate"]
            forged = await http.post(f"{public}/mcp/time", json={},
                                     headers={"Authorization": "Bearer e30.e30.x"})
            assert (forged.status_code, forged.json()["reason"]) == (
                401, "grant_algorithm_not_allowed")

        # X-Forwarded-For is anyone's to send: read only from the config's trusted_proxies
        async with agent(f"{public}/mcp/time", grant, deployment,
                         {"X-Forwarded-For": "203.0.113.9"}) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {
                "get_current_time", "convert_time"}
            now = await client.call_tool("get_current_time", {"timezone": "UTC"})
            assert now.structured_content and now.structured_content["timezone"] == "UTC"
            called = search_events(deployment.runtime.store, EventFilter(
                action="tool:time/get_current_time"))
            assert [e.event["source"] for e in called] == ["127.0.0.1"]
            with pytest.raises(MCPError) as denied:
                await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
            assert denied.value.error.data["reason"] == "no_matching_permit"

        async with agent(f"{public}/mcp", grant, deployment) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"time__get_current_time", "test__echo", "test__request_headers"} <= names
            seen = await client.call_tool("test__request_headers", {})
            assert seen.structured_content is not None
            # the upstream got the header of the config, with the leased secret, not the grant
            assert seen.structured_content["authorization_sha256"] == hashlib.sha256(
                f"Bearer {secret}".encode()).hexdigest()
            assert "dpop" not in seen.structured_content["names"]
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("mail__send", {"to": "x@vendor.example"})
            assert unknown.value.error.data["reason"] == "tool_unknown"


async def test_a_revoked_grant_loses_its_session_and_every_later_request(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    async with gateway_in_process(deployment, "tok_" + secrets.token_urlsafe(24)) as public:
        async with agent(f"{public}/mcp/test", grant, deployment) as client:
            await client.call_tool("echo", {"text": "before"})
            # idle: the grant's upstreams stop and its session's lease ends; the agent's
            # MCP session goes on, and the next call opens a new gateway session
            with anyio.fail_after(WAIT):
                while not any(n.kind == "session" and n.revoked_reason == "idle"
                              for n in deployment.runtime.grants.tree(grant.claims.task_id)):
                    await anyio.sleep(0.1)
            await client.call_tool("echo", {"text": "after a pause"})
            await anyio.to_thread.run_sync(deployment.runtime.grants.revoke, grant.accessor,
                                           "incident 8")
            with anyio.fail_after(WAIT), pytest.raises(MCPError):
                while True:  # refused once the gateway has heard (at once, or by polling)
                    await client.call_tool("echo", {"text": "after"})
                    await anyio.sleep(0.1)
        async with httpx2.AsyncClient(auth=GrantAuth(grant.token, deployment.key,
                                                     SystemClock())) as http:
            again = await http.post(f"{public}/mcp/test", json={
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}})
            assert (again.status_code, again.json()["reason"]) == (401, "grant_revoked")
