"""The MCP conformance suite through ``proctor gateway``: whatever the upstream passes on its
own, it still passes when an agent reaches it through the gateway (see
docs/gateway-conformance.md). The suite's client cannot sign, so it talks to an
agent-side proxy that adds the grant and a proof to each request; the gateway keeps
its full checks.

What the upstream passes on its own is the recorded baseline, which
``tests/conformance/test_conformance.py`` checks the upstream passes exactly, so the
suite runs once here (through the gateway), not a second time directly.

The gateway and the proxy run in this process (the gateway as ``proctor gateway
--config`` builds it: its own runtime, the store for hearing revocations), each served
by uvicorn on its own loopback socket; the suite (node) and the upstream are real
processes. The subject is the protocol as the gateway relays it, not the process:
``proctor gateway`` as a process is tested in ``tests/e2e/test_gateway_http.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from proctor.gateway.launch import load_agent_key
from tests.conformance.runner import ScenarioOutcome, load_baseline, run_scenarios
from tests.gateway.conftest import Deployment, make_deployment
from tests.gateway.in_process import gateway_from, listening_socket, served, url_of
from tests.gateway.signing_proxy import SigningProxy

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def deployment(tmp_path: Path, sqlite_template: Path) -> Iterator[Deployment]:
    yield from make_deployment(f"sqlite:///{tmp_path / 'proctor.db'}", tmp_path)


async def test_gateway_loses_no_conformance(conformance_suite: None, conformance_upstream: str,
                                            deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "conf/*"}])
    gateway_sock, proxy_sock = listening_socket(), listening_socket()
    public = url_of(gateway_sock)
    config = deployment.config({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://")},
        "upstreams": {"conf": {"url": conformance_upstream}}})
    proxy = SigningProxy(public, grant.token, load_agent_key(deployment.key_file))
    async with gateway_from(deployment, config, gateway_sock), served(proxy, proxy_sock):
        through = await anyio.to_thread.run_sync(
            run_scenarios, f"{url_of(proxy_sock)}/mcp/conf")
    baseline = load_baseline()
    assert set(through) == set(baseline["passing"]) | set(baseline["not_passing"])
    missing = ScenarioOutcome(False, ["not run"])
    lost = {name: through.get(name, missing).problems for name in baseline["passing"]
            if not through.get(name, missing).passed}
    assert not lost, f"the gateway loses {sorted(lost)}: {lost}"
    assert any(outcome.passed for outcome in through.values())
