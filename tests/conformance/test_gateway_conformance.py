"""The MCP conformance suite through ``proctor gateway``: whatever the upstream passes on its
own, it still passes when an agent reaches it through the gateway (see
docs/gateway-conformance.md). The suite's client cannot sign, so it talks to an
agent-side proxy that adds the grant and a proof to each request; the gateway keeps
its full checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest

from tests.conformance.runner import run_scenarios
from tests.gateway.conftest import ROOT, Deployment, make_deployment

pytestmark = pytest.mark.slow

WAIT = 60.0


@pytest.fixture
def deployment(tmp_path: Path, sqlite_template: Path) -> Iterator[Deployment]:
    yield from make_deployment(f"sqlite:///{tmp_path / 'proctor.db'}", tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _running(args: list[str], ready_url: str, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT)
    try:
        deadline = time.monotonic() + WAIT
        with httpx2.Client() as http:
            while True:
                assert process.poll() is None, f"{args[2:4]} exited"
                try:
                    http.get(ready_url)
                    break
                except httpx2.TransportError:
                    assert time.monotonic() < deadline, f"{args[2:4]} did not start"
                    time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT)


def test_gateway_loses_no_conformance(conformance_suite: None, conformance_upstream: str,
                                      deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "conf/*"}])
    port, proxy_port = _free_port(), _free_port()
    public = f"http://127.0.0.1:{port}"
    config = deployment.config({
        "gateway": {"public_url": public, "listen": f"127.0.0.1:{port}"},
        "upstreams": {"conf": {"url": conformance_upstream}}})
    env = {**deployment.env, "PROCTOR_GRANT": grant.token}
    gateway = [sys.executable, "-m", "proctor.cli", "gateway", "--config", str(config)]
    proxy = [sys.executable, "-m", "tests.gateway.signing_proxy", "--gateway", public,
             "--port", str(proxy_port), "--key-file", str(deployment.key_file)]
    with _running(gateway, f"{public}/.well-known/oauth-protected-resource", env), _running(
            proxy, f"http://127.0.0.1:{proxy_port}/.well-known/oauth-protected-resource", env):
        direct = run_scenarios(conformance_upstream)
        through = run_scenarios(f"http://127.0.0.1:{proxy_port}/mcp/conf")
    lost = {name: through[name].problems for name, outcome in direct.items()
            if outcome.passed and not through[name].passed}
    assert not lost, f"the gateway loses {sorted(lost)}: {lost}"
    assert any(outcome.passed for outcome in through.values())
