"""``proctor discover``: every client's documented format, secrets, and files it cannot read.

The fixtures in ``clients/`` are written from each product's own documentation, one
folder per client, laid out as that client's home or project folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from proctor.oversight import CLIENTS, discover
from proctor.oversight.clients import strip_jsonc
from proctor.oversight.discovery import MAX_CONFIG_BYTES

FIXTURES = Path(__file__).resolve().parent / "clients"

# client -> {server: (transport, the plaintext secrets' places, auth)}
EXPECTED: dict[str, dict[str, tuple[str, list[str], str]]] = {
    "claude-desktop": {
        "filesystem": ("stdio", [], "local process"),
        "github": ("stdio", ["env.GITHUB_PERSONAL_ACCESS_TOKEN"], "local process")},
    "claude-code": {
        "context7": ("stdio", [], "local process"),
        "stripe": ("http", ["headers.Authorization"], "bearer token in header Authorization"),
        "api-server": ("http", [], "bearer token in header Authorization"),
        "airtable": ("stdio", [], "local process")},
    "cursor": {
        "server-name": ("stdio", ["env.API_KEY"], "local process"),
        "context7": ("http", [], "key in header CONTEXT7_API_KEY")},
    "vscode": {
        "Perplexity": ("stdio", [], "local process"),
        "github": ("http", [], "none configured (OAuth, if the server asks)")},
    "windsurf": {
        "github": ("stdio", ["env.GITHUB_PERSONAL_ACCESS_TOKEN"], "local process"),
        "remote-github": ("http", [], "bearer token in header Authorization")},
    "zed": {
        "local-mcp-server": ("stdio", [], "local process"),
        "older-form": ("stdio", [], "local process"),
        "remote-mcp-server": ("http", ["headers.Authorization"],
                              "bearer token in header Authorization")},
    "continue": {
        "SQLite MCP": ("stdio", [], "local process"),
        "Remote docs": ("http", [], "none configured (OAuth, if the server asks)"),
        "Browser search": ("stdio", [], "local process")},
    "gemini": {
        "git": ("stdio", [], "local process"),
        "github": ("http", ["headers.Authorization"], "header Authorization"),
        "legacy-sse": ("sse", [], "none configured (OAuth, if the server asks)")},
    "codex": {
        "docs": ("stdio", ["env.API_KEY"], "local process"),
        "figma": ("http", [], "bearer token from $FIGMA_OAUTH_TOKEN")},
}


def test_there_is_a_fixture_for_every_client() -> None:
    assert {c.name for c in CLIENTS} == set(EXPECTED)
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == set(EXPECTED)


@pytest.mark.parametrize("client", sorted(EXPECTED))
def test_each_clients_documented_format_is_read_from_its_documented_place(client: str) -> None:
    found = discover([FIXTURES / client])
    assert found.problems == ()
    assert {s.client for s in found.servers} == {client}
    got = {s.name: (s.transport, [x.where for x in s.secrets], s.auth) for s in found.servers}
    assert got == EXPECTED[client]


def test_the_default_scan_reads_the_home_and_the_current_project(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    (home / ".codeium" / "windsurf").mkdir(parents=True)
    (home / ".codeium/windsurf/mcp_config.json").write_text(
        (FIXTURES / "windsurf/.codeium/windsurf/mcp_config.json").read_text())
    (project / ".vscode").mkdir(parents=True)
    (project / ".vscode/mcp.json").write_text((FIXTURES / "vscode/.vscode/mcp.json").read_text())
    found = discover(home=home, cwd=project)
    assert {(s.client, s.name) for s in found.servers} == {
        ("windsurf", "github"), ("windsurf", "remote-github"),
        ("vscode", "Perplexity"), ("vscode", "github")}


def test_a_command_and_its_environment_are_reported_and_values_never_are() -> None:
    found = discover([FIXTURES / "claude-desktop"])
    github = next(s for s in found.servers if s.name == "github")
    assert github.command == ("npx", "-y", "@modelcontextprotocol/server-github")
    assert github.env == ("GITHUB_PERSONAL_ACCESS_TOKEN",)
    assert "fixture-plaintext-token" not in json.dumps(found.as_json())


def test_a_credential_format_is_found_under_any_name_and_shown_redacted(tmp_path: Path) -> None:
    token = "ghp_" + secrets.token_hex(18)
    config = tmp_path / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": {"gh": {
        "command": "npx", "args": ["-y", "server-github", token],
        "env": {"SETTINGS": f"user=me,login={token}"}}}}))
    server = discover([config]).servers[0]
    assert [(s.where, s.kind) for s in server.secrets] == [
        ("env.SETTINGS", "github_token"), ("args[3]", "github_token")]
    assert token not in json.dumps(server.as_json())
    assert server.command[-1] == "[REDACTED:github_token]"


def test_references_to_variables_and_inputs_are_not_plaintext_secrets(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"x": {
        "command": "x", "args": ["--api-key", "${env:KEY}"],
        "env": {"A_TOKEN": "${input:token}", "B_TOKEN": "$B_TOKEN", "C_TOKEN": "${secret:c}"},
        }}}))
    assert discover([config]).servers[0].secrets == ()


def test_a_server_already_behind_proctor_is_recognised(tmp_path: Path) -> None:
    config = tmp_path / "claude_desktop_config.json"
    config.write_text(json.dumps({"mcpServers": {
        "time": {"command": "/usr/local/bin/proctor",
                 "args": ["mcp", "wrap", "--agent", "a", "--", "uvx", "mcp-server-time"]},
        "git": {"command": "python", "args": ["-m", "proctor.cli", "mcp", "wrap", "--agent",
                                              "a", "--", "uvx", "mcp-server-git"]},
        "raw": {"command": "uvx", "args": ["mcp-server-time"]}}}))
    wrapped = {s.name: s.behind_proctor for s in discover([config]).servers}
    assert wrapped == {"time": True, "git": True, "raw": False}


def test_jsonc_comments_and_trailing_commas_are_read_and_strings_left_alone() -> None:
    text = '{"a": "// not a comment", /* gone */ "b": [1, 2,], // gone\n}'
    plain, had_comments = strip_jsonc(text)
    assert json.loads(plain) == {"a": "// not a comment", "b": [1, 2]}
    assert had_comments


def test_each_bad_file_is_reported_and_the_scan_goes_on(tmp_path: Path) -> None:
    good = tmp_path / "good" / ".cursor"
    good.mkdir(parents=True)
    (good / "mcp.json").write_text((FIXTURES / "cursor/.cursor/mcp.json").read_text())
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {"x": ')
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:  # sparse: the size is checked before anything is read
        handle.truncate(MAX_CONFIG_BYTES + 1)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    unknown = tmp_path / "other.json"
    unknown.write_text('{"servers": []}')
    found = discover([broken, loop, huge, fifo, unknown, tmp_path / "missing.json",
                      tmp_path / "good"])
    assert {(Path(p.file).name, p.code) for p in found.problems} == {
        ("broken.json", "config_malformed"), ("loop.json", "config_symlink_loop"),
        ("huge.json", "config_too_large"), ("pipe.json", "config_not_a_file"),
        ("other.json", "config_unknown_format"), ("missing.json", "config_not_found")}
    assert {s.name for s in found.servers} == {"server-name", "context7"}


_AS_NOBODY = """
import json, sys
from pathlib import Path
from proctor.oversight import discover
print(json.dumps([p.code for p in discover([Path(sys.argv[1])]).problems]))
"""


def test_a_file_the_user_cannot_read_is_reported() -> None:
    # root reads every file whatever its mode, so as root the scan runs as `nobody`;
    # pytest's tmp_path is root's alone, so the file goes in a folder anyone may enter
    with tempfile.TemporaryDirectory() as where:
        folder = Path(where)
        folder.chmod(0o755)
        config = folder / "claude_desktop_config.json"
        config.write_text("{}")
        config.chmod(0)
        if os.geteuid() != 0:
            codes = [p.code for p in discover([config]).problems]
        else:
            setpriv = shutil.which("setpriv")
            assert setpriv is not None, "util-linux's setpriv drops root for this test"
            done = subprocess.run(
                [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                 sys.executable, "-c", _AS_NOBODY, str(config)],
                capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
            codes = json.loads(done.stdout)
    assert codes == ["config_unreadable"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proctor.cli", "discover", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "250"})


def test_the_command_exits_1_on_a_plaintext_secret_and_0_without() -> None:
    dirty = _cli("--json", str(FIXTURES / "codex"))
    assert dirty.returncode == 1, dirty.stderr
    report = json.loads(dirty.stdout)
    assert report["plaintext_secrets"] == 1
    assert {s["server"] for s in report["servers"]} == {"docs", "figma"}
    clean = _cli(str(FIXTURES / "vscode"))
    assert clean.returncode == 0, clean.stderr
    assert "Perplexity" in clean.stdout
