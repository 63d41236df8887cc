"""The gateway's configuration file: what it accepts, and a clear error for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.cli.gateway import server_name_for
from proctor.errors import ConfigError
from proctor.gateway import load_gateway_config, parse_gateway_config
from proctor.gateway.config import fill_secrets, secret_names
from proctor.policy import Sensitivity


def test_a_full_config_reads_into_upstreams_labels_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("""
gateway:
  public_url: https://mcp.acme.example
  max_message_bytes: 65536
  call_timeout_seconds: 5
upstreams:
  git:
    command: [uvx, mcp-server-git, --repository, /srv/repos/app]
    env: {GITHUB_TOKEN: "${secret:github-token}"}
    labels: {sensitivity: internal}
    tools:
      git_commit: {sensitivity: confidential, destination: github.com}
  crm:
    url: https://crm.vendor.example/mcp
    headers: {Authorization: "Bearer ${secret:crm-token}"}
    labels: {connector: salesforce}
""")
    config = load_gateway_config(path)
    assert (config.public_url, config.max_message_bytes, config.call_timeout_seconds) == (
        "https://mcp.acme.example", 65536, 5)
    git, crm = config.upstream("git"), config.upstream("crm")
    assert git.is_stdio and not crm.is_stdio
    commit = git.labels_for("git_commit")
    assert (commit.sensitivity, commit.destination) == (Sensitivity.CONFIDENTIAL, "github.com")
    assert git.labels_for("git_log").sensitivity is Sensitivity.INTERNAL
    assert secret_names(crm.headers["Authorization"]) == ["crm-token"]
    assert fill_secrets(crm.headers["Authorization"], {"crm-token": "abc"}) == "Bearer abc"


@pytest.mark.parametrize(("document", "says"), [
    ({"upstreams": {"Git": {"command": ["x"]}}}, "upstream `Git`"),
    ({"upstreams": {"a__b": {"command": ["x"]}}}, "single `_`"),
    ({"upstreams": {"git": {"command": ["x"], "url": "https://x"}}}, "not both"),
    ({"upstreams": {"git": {"command": ["x"], "headers": {"X-Key": "v"}}}}, "HTTP upstream"),
    ({"upstreams": {"crm": {"url": "https://x", "headers": {"DPoP": "v"}}}}, "set by the gateway"),
    ({"upstreams": {"git": {"command": ["x"], "labels": {"sensitivity": "secret"}}}},
     "sensitivity `secret`"),
    ({"gateway": {"max_message_bytes": -1}}, "`max_message_bytes` must be a positive integer"),
    ({"gateway": {"call_timeout": 3}}, "unknown key `call_timeout`"),
    ({"gateway": {"public_url": "ftp://x"}}, "`public_url` must be an http(s) URL"),
    ({"upstreams": {"git": {"command": ["x"], "env": {"1BAD": "v"}}}}, "name `1BAD`"),
])
def test_a_bad_config_names_what_is_wrong(document: object, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_gateway_config(document)
    assert says in refused.value.message


def test_an_unreadable_or_oversized_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_gateway_config(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (300 * 1024))
    with pytest.raises(ConfigError, match="larger than"):
        load_gateway_config(big)


@pytest.mark.parametrize(("command", "name"), [
    (["uvx", "mcp-server-git", "--repository", "/r"], "git"),
    (["python", "-m", "mcp_server_time"], "time"),
    (["/usr/local/bin/github-mcp"], "github-mcp"),
])
def test_a_server_is_named_after_its_command(command: list[str], name: str) -> None:
    assert server_name_for(command) == name
