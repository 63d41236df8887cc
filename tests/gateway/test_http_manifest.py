"""The HTTP gateway presents the manifest its configuration names for an agent when a
session of that agent's grant opens, as ``proctor mcp wrap --manifest`` does: the prompt
and lock files are measured, a change makes the agent drifted at once (audited as the
gateway's), and the same manifest again changes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest
import yaml

from proctor.audit import iter_events
from proctor.clock import FrozenClock, SystemClock
from proctor.errors import ConfigError
from proctor.gateway import Gateway, load_gateway_config
from proctor.gateway.http import build_http_app
from proctor.identity.agent import TrustState
from proctor.runtime import open_runtime
from tests.gateway.conftest import CODER, ROOT, UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import agent, listening_socket, served, url_of
from tests.identity.factories import manifest

pytestmark = pytest.mark.anyio


def _config(tmp: Path, public: str, prompt: str) -> Path:
    (tmp / "prompt.txt").write_text(prompt)
    (tmp / "uv.lock").write_text("# the agent's dependencies\n")
    reviewed = manifest().as_json()
    del reviewed["system_prompt_digest"], reviewed["dependency_lock_digest"]
    (tmp / "coder.yaml").write_text(yaml.safe_dump(
        {**reviewed, "system_prompt_file": "prompt.txt", "dependency_lock_file": "uv.lock"}))
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": {"public_url": public, "listen": public.removeprefix("http://")},
        "upstreams": {"plain": {"command": list(UPSTREAM), "cwd": str(ROOT)}},
        "manifests": {"coder": "coder.yaml"}}))
    return config


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_session_opening_presents_the_configured_manifest(
        deployment: Deployment, tmp_path: Path) -> None:
    clock = FrozenClock(SystemClock().now())
    sock = listening_socket()
    public = url_of(sock)
    config = load_gateway_config(_config(tmp_path, public, "You are a careful coder."))
    configured = config.manifest_for(CODER)
    assert configured is not None
    assert configured.system_prompt_digest == _sha256(tmp_path / "prompt.txt")
    assert configured.dependency_lock_digest == _sha256(tmp_path / "uv.lock")
    runtime = open_runtime(deployment.settings, clock=clock)
    try:
        gateway = Gateway.on(runtime, config)
        # both grants before the first session: a drifted agent gets no new one
        first, second = deployment.grant(), deployment.grant()
        with anyio.fail_after(WAIT):
            async with served(build_http_app(gateway), sock):
                async with agent(f"{public}/mcp/plain", first, deployment, clock) as client:
                    await client.list_tools()
                async with agent(f"{public}/mcp/plain", second, deployment, clock) as again:
                    await again.list_tools()  # another grant's session: presented again
        found = runtime.registry.get(CODER)
        assert found.trust_state is TrustState.DRIFTED  # its prompt and lock file differ
        assert found.presented_digest == configured.digest
        drifts = [e.event for e in iter_events(runtime.store)
                  if e.event["action"] == "agent.drift"]
        assert [(d["actor"]["id"], d["target"]) for d in drifts] == [
            ("proctor-gateway", f'Agent::"{CODER}"')]
        assert drifts[0]["detail"]["fields"] == ["dependency_lock_digest",
                                                 "system_prompt_digest"]
    finally:
        runtime.close()


def test_a_manifest_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"manifests": {"coder": "missing.yaml"}}))
    with pytest.raises(ConfigError, match="manifests: `coder`"):
        load_gateway_config(config)
    config.write_text(yaml.safe_dump({"manifests": ["coder.yaml"]}))
    with pytest.raises(ConfigError, match="`manifests` must be a mapping"):
        load_gateway_config(config)
