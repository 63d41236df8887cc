"""``proctor discover --wrap``: each local server behind proctor, secrets out of the file,
everything else kept, and a second run changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from proctor.errors import ConfigError
from proctor.oversight import discover
from proctor.oversight.wrapping import WrapOptions, plan_wrap

FIXTURES = Path(__file__).resolve().parent / "clients"
OPTIONS = WrapOptions(agent="coder", proctor="/opt/proctor/bin/proctor", home="/srv/proctor",
                      key_file="/keys/coder.pem", grant_file="/grants/coder.jwt")
JSON_CONFIGS = {
    "claude-desktop": ".config/Claude/claude_desktop_config.json",
    "claude-code": ".claude.json",
    "cursor": ".cursor/mcp.json",
    "windsurf": ".codeium/windsurf/mcp_config.json",
    "gemini": ".gemini/settings.json",
}


def _copy(client: str, relative: str, tmp_path: Path) -> Path:
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / client / relative, target)
    return target


@pytest.mark.parametrize("client", sorted(JSON_CONFIGS))
def test_every_local_server_is_wrapped_and_a_second_run_changes_nothing(
        client: str, tmp_path: Path) -> None:
    path = _copy(client, JSON_CONFIGS[client], tmp_path)
    before = {s.name: s for s in discover([path]).servers}
    plan = plan_wrap(path, OPTIONS)
    assert set(plan.wrapped) == {n for n, s in before.items() if not s.is_remote}
    assert {n for n, _ in plan.left} == {n for n, s in before.items() if s.is_remote}
    path.write_text(plan.rewritten)
    after = {s.name: s for s in discover([path]).servers}
    assert set(after) == set(before)
    for name, server in after.items():
        assert server.behind_proctor is not before[name].is_remote
        if not server.is_remote:
            assert server.secrets == ()
    again = plan_wrap(path, OPTIONS)
    assert not again.is_change and again.wrapped == ()


def test_the_wrapped_command_keeps_the_original_and_hands_the_environment_on(
        tmp_path: Path) -> None:
    path = _copy("claude-desktop", JSON_CONFIGS["claude-desktop"], tmp_path)
    plan = plan_wrap(path, OPTIONS)
    github = json.loads(plan.rewritten)["mcpServers"]["github"]
    assert github["command"] == "/opt/proctor/bin/proctor"
    assert github["args"] == [
        "mcp", "wrap", "--agent", "coder", "--server", "github", "--key-file",
        "/keys/coder.pem", "--grant-file", "/grants/coder.jwt",
        "--env", "GITHUB_PERSONAL_ACCESS_TOKEN",
        "--", "npx", "-y", "@modelcontextprotocol/server-github"]
    assert github["env"] == {
        "GITHUB_PERSONAL_ACCESS_TOKEN": "${secret:mcp.github.GITHUB_PERSONAL_ACCESS_TOKEN}",
        "PROCTOR_HOME": "/srv/proctor"}
    [moved] = plan.secrets
    assert (moved.name, moved.value) == ("mcp.github.GITHUB_PERSONAL_ACCESS_TOKEN",
                                         "fixture-plaintext-token-not-real")
    assert "fixture-plaintext-token-not-real" not in plan.rewritten
    assert "fixture-plaintext-token-not-real" not in plan.diff()
    assert "fixture-plaintext-token-not-real" not in repr(plan)


def test_unknown_fields_survive_in_their_order(tmp_path: Path) -> None:
    path = _copy("gemini", JSON_CONFIGS["gemini"], tmp_path)
    document = json.loads(plan_wrap(path, OPTIONS).rewritten)
    assert list(document) == ["theme", "mcpServers"]
    git = document["mcpServers"]["git"]
    assert list(git) == ["command", "args", "cwd", "timeout", "trust", "includeTools", "env"]
    assert (git["cwd"], git["timeout"], git["trust"], git["includeTools"]) == (
        "./server-directory", 30000, False, ["git_status"])
    claude = json.loads(plan_wrap(_copy("claude-code", ".claude.json", tmp_path),
                                  OPTIONS).rewritten)
    assert claude["numStartups"] == 12
    assert claude["projects"]["/home/you/dev/my-app"]["allowedTools"] == []


def test_the_files_indentation_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text('{\n    "mcpServers": {\n        "time": {"command": "uvx", '
                    '"args": ["mcp-server-time"]}\n    }\n}\n')
    rewritten = plan_wrap(path, OPTIONS).rewritten
    assert rewritten.splitlines()[1] == '    "mcpServers": {'
    assert rewritten.endswith("}\n")


def test_zeds_older_nested_command_is_wrapped_in_place(tmp_path: Path) -> None:
    path = tmp_path / ".zed" / "settings.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"context_servers": {"git": {
        "source": "custom", "command": {"path": "uvx", "args": ["mcp-server-git"],
                                        "env": {"GIT_TOKEN": "plaintext-value-1"}},
        "settings": {}}}}))
    plan = plan_wrap(path, OPTIONS)
    git = json.loads(plan.rewritten)["context_servers"]["git"]
    assert git["command"]["path"] == "/opt/proctor/bin/proctor"
    assert git["command"]["args"][-3:] == ["--", "uvx", "mcp-server-git"]
    assert git["command"]["env"]["GIT_TOKEN"] == "${secret:mcp.git.GIT_TOKEN}"
    assert git["source"] == "custom" and git["settings"] == {}


@pytest.mark.parametrize(("relative", "client", "words"), [
    (".vscode/mcp.json", "vscode", "comments"),
    (".codex/config.toml", "codex", "TOML"),
    (".continue/config.yaml", "continue", "YAML"),
])
def test_a_file_it_could_not_write_back_faithfully_is_refused(
        relative: str, client: str, words: str, tmp_path: Path) -> None:
    path = _copy(client, relative, tmp_path)
    with pytest.raises(ConfigError, match=words):
        plan_wrap(path, OPTIONS)


def test_a_file_that_does_not_parse_completely_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text('{"mcpServers": {"time": {"command": "uvx"}}')
    with pytest.raises(ConfigError, match="config_malformed"):
        plan_wrap(path, OPTIONS)
    with pytest.raises(ConfigError, match="does not exist"):
        plan_wrap(tmp_path / "missing.json", OPTIONS)


def test_a_secret_in_the_arguments_is_reported_as_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps({"mcpServers": {"db": {
        "command": "db-mcp", "args": ["--password", "hunter2-plaintext"]}}}))
    plan = plan_wrap(path, OPTIONS)
    assert plan.left == (("db", "plaintext secret in args[2] left in place: move it by hand"),)
