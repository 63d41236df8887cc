"""The console in process (httpx ASGITransport) on the API's fixtures: a real runtime on
each backend, real keys, the admin token; plus a signed-in browser-like client."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.server.conftest import (
    BASE_URL,
    SUPPORT,
    TARGET,
    Api,
    agents,
    anyio_backend,
    api,
    frozen,
    runtime,
    settings,
)

__all__ = ["BASE_URL", "SUPPORT", "TARGET", "Api", "Console", "agents", "anyio_backend", "api",
           "console", "csrf_of", "frozen", "runtime", "settings", "sign_in"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/console/login")
    assert form.status_code == 200
    return await client.post("/console/login", data={"token": token, "csrf": csrf_of(form.text),
                                                     "next": "/console/approvals"})


@dataclass
class Console:
    """A browser-like client (cookies kept) signed in as a human."""

    client: httpx.AsyncClient
    api: Api

    async def page(self, path: str) -> httpx.Response:
        return await self.client.get(path)

    async def post(self, path: str, data: dict[str, Any], *, csrf_from: str) -> httpx.Response:
        page = await self.client.get(csrf_from)
        return await self.client.post(path, data={"csrf": csrf_of(page.text), **data})


@pytest.fixture
async def console(agents: Api) -> Console:
    transport = httpx.ASGITransport(app=agents.app, client=("10.9.8.7", 50000))
    client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
    signed = await sign_in(client, agents.admin_token)
    assert signed.status_code == 303, signed.text
    return Console(client, agents)
