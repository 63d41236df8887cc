"""The round trip: a Claude-Desktop-style config with a plaintext key is wrapped by
``proctor discover --wrap --write``, launched as the client would launch it, and
mcp-server-time answers through proctor with the key injected from the secret store.

``proctor discover`` runs in this process (its answers and what it writes are the
subject; the command as a process is run in ``tests/oversight/test_discovery.py``);
the wrapped entry is launched as a real process, as the client would."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import pytest
from mcp import StdioServerParameters
from typer.testing import CliRunner, Result

from proctor.cli.main import app
from tests.gateway.conftest import TIME, Deployment, connected

pytestmark = pytest.mark.anyio

PROCTOR = str(Path(sys.executable).parent / "proctor")


def _discover(deployment: Deployment, *args: str) -> Result:
    """``proctor discover`` in this process, in an environment naming the home alone."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PROCTOR_")}
    env.update(PROCTOR_HOME=str(deployment.settings.home), COLUMNS="250")
    return CliRunner().invoke(app, ["discover", *args], env=env)


def _upstream_environment(marker: str) -> dict[str, str]:
    """The environment of the running mcp-server-time that was given ``MARKER=marker``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"mcp_server_time" not in argv or b"wrap" in argv:  # not the wrapper itself
                continue
            raw = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"MARKER={marker}".encode() in raw.split(b"\0"):
            pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
            return {k.decode(): v.decode() for k, v in pairs}
    raise AssertionError("no mcp-server-time process was given the marker")


async def test_a_wrapped_config_runs_time_through_proctor_with_the_key_from_the_store(
        deployment: Deployment) -> None:
    home = deployment.settings.home
    # what a client's minimal environment needs to open this home: its settings file
    (home / "proctor.toml").write_text(
        f'database_url = "{deployment.settings.database_url}"\ntrust_domain = "acme.example"\n')
    grant_file = deployment.tmp / "coder.grant"
    grant_file.write_text(deployment.grant([{"tool": "time/*"}]).token)
    key = f"tk_{secrets.token_hex(16)}"
    marker = f"marker-{secrets.token_hex(8)}"  # finds this test's upstream among others
    config = deployment.tmp / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": {"time": {
        "command": TIME[0], "args": [*TIME[1:]],
        "env": {"TIME_API_KEY": key, "MARKER": marker}}}, "globalShortcut": ""}, indent=2))

    dry = _discover(deployment, "--wrap", str(config), "--agent", "coder", "--key-file",
                    str(deployment.key_file), "--grant-file", str(grant_file),
                    "--proctor", PROCTOR)
    assert dry.exit_code == 0, dry.output
    assert "${secret:mcp.time.TIME_API_KEY}" in dry.stdout and key not in dry.stdout
    assert key in config.read_text()  # a dry run writes nothing

    done = _discover(deployment, "--wrap", str(config), "--agent", "coder", "--key-file",
                     str(deployment.key_file), "--grant-file", str(grant_file),
                     "--proctor", PROCTOR, "--write", "--by", "erin@acme.example")
    assert done.exit_code == 0, done.output
    assert key not in config.read_text()
    backups = list(deployment.tmp.glob("claude_desktop_config.json.*.bak"))
    # the backup beside the file (in a project folder, perhaps under version control)
    # never holds the key the rewrite moved, and only its owner may read it
    assert len(backups) == 1 and key not in backups[0].read_text()
    assert json.loads(backups[0].read_text())["mcpServers"]["time"]["env"] == {
        "TIME_API_KEY": "${secret:mcp.time.TIME_API_KEY}", "MARKER": marker}
    assert backups[0].stat().st_mode & 0o777 == 0o600
    assert deployment.runtime.secrets.names() == ["mcp.time.TIME_API_KEY"]

    again = _discover(deployment, "--wrap", str(config), "--agent", "coder", "--write")
    assert again.exit_code == 0 and "nothing to change" in again.stderr
    scan = _discover(deployment, "--json", str(config))
    assert scan.exit_code == 0, scan.stdout  # no plaintext secret left
    assert json.loads(scan.stdout)["servers"][0]["behind_proctor"] is True

    entry = json.loads(config.read_text())["mcpServers"]["time"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"],
                                   env=entry["env"])
    async with connected(params) as client:
        result = await client.call_tool("get_current_time", {"timezone": "Europe/Berlin"})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["timezone"] == "Europe/Berlin"
        upstream = _upstream_environment(marker)
        assert upstream["TIME_API_KEY"] == key
        assert upstream["MARKER"] == marker
