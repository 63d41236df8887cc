"""The end-to-end tests reuse the identity tests' registry and trust fixtures and the
gateway tests' deployment; the demo's tests share one run of the demo."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gateway.conftest import Deployment, make_deployment
from tests.gateway.in_process import listening_socket, served, url_of
from tests.gateway.upstream_server import create_server
from tests.identity.conftest import (  # noqa: F401 - fixtures, used by name
    authenticator,
    oidc_authority,
    oidc_signing_key,
    registry,
    svid_authority,
    trust,
    wall_clock,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """A proctor home with a registered coding agent, for the gateway's end-to-end tests."""
    yield from make_deployment(database_url, tmp_path)


@asynccontextmanager
async def http_upstream() -> AsyncIterator[str]:
    """The tests' own upstream (``tests/gateway/upstream_server.py``) over streamable HTTP,
    served in this process until the block ends: its URL. For the tests whose subject is
    what the gateway does with what an upstream answers, not the upstream's process: one
    interpreter less per test (about 1 s of CPU, the MCP SDK's import). The upstream as
    a process over stdio is in ``test_gateway_stdio.py``, ``test_gateway_approval.py``,
    ``test_tool_pinning.py`` and ``tests/gateway/test_wrap_bad_input.py``."""
    sock = listening_socket()
    async with served(create_server().streamable_http_app(), sock):
        yield f"{url_of(sock)}/mcp"


@dataclass(frozen=True)
class DemoRun:
    """A finished ``proctor demo --auto-approve --json`` and the home it played in."""

    completed: subprocess.CompletedProcess[str]
    home: Path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo as the README's first command runs it: unattended, as a real process,
    against real MCP servers. Run once per worker: the demo's own test reads its report,
    the compliance report's tests read its home (the suite keeps them on one worker,
    ``tests/longest_first.py``)."""
    root = tmp_path_factory.mktemp("demo")
    home = root / "demo-home"
    completed = subprocess.run(
        [sys.executable, "-m", "proctor.cli", "demo", "--auto-approve", "--json",
         "--home", str(home)],
        env={**os.environ}, cwd=root, capture_output=True, text=True, timeout=600,
        check=False)
    return DemoRun(completed, home)
