"""The recording upstream (:mod:`tests.gateway.recording_upstream`) behind the real HTTP
gateway, and an agent's MCP client session with it over streamable HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from proctor.grants import IssuedGrant
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import gateway_from, listening_socket, served, url_of
from tests.gateway.recording_upstream import create_server


@asynccontextmanager
async def recorded_http(deployment: Deployment, record: Path, grant: IssuedGrant, *,
                        path: str = "/mcp/test", upstream: dict[str, Any] | None = None,
                        client: Callable[[Any, Any], ClientSession] = ClientSession
                        ) -> AsyncIterator[ClientSession]:
    """``grant``'s client session on ``path`` of a gateway whose upstream ``test`` is a
    recording upstream writing to ``record``; ``upstream``: more of its config (labels)."""
    upstream_sock, sock = listening_socket(), listening_socket()
    port = sock.getsockname()[1]
    config = deployment.config({
        "gateway": {"public_url": url_of(sock), "listen": f"127.0.0.1:{port}",
                    "authorization_servers": ["https://proctor.acme.example"]},
        "upstreams": {"test": {"url": f"{url_of(upstream_sock)}/mcp", **(upstream or {})}}})
    async with served(create_server(record).streamable_http_app(), upstream_sock), \
            gateway_from(deployment, config, sock):
        auth = GrantAuth(grant.token, deployment.key, SystemClock())
        with anyio.fail_after(WAIT):
            async with httpx2.AsyncClient(auth=auth, timeout=WAIT) as http, \
                    streamable_http_client(f"{url_of(sock)}{path}", http_client=http) as (
                        read, write), client(read, write) as session:
                await session.initialize()
                yield session
