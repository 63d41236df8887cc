"""No false alarms on what real tools print: git, and the real MCP time and git servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from proctor.oversight import OutputGuard

WAIT = 60  # seconds: every wait here is bounded
GUARD = OutputGuard(grant_issuer="spiffe://acme.example/proctor")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with a few commits of code, as an agent would work on."""
    path = tmp_path / "app"
    path.mkdir()
    git = ["git", "-c", "user.name=Alice Example", "-c", "user.email=alice@acme.example",
           "-C", str(path)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True, timeout=WAIT)
    files = {
        "README.md": "# app\n\nRun `make test`. Issue tracker: https://tracker.acme.example/APP-1234\n",
        "app/settings.py": "DATABASE_URL = os.environ.get('DATABASE_URL')\n"
                           "password = get_password(vault_path='kv/app/db')\n"
                           "TIMEOUT_SECONDS = 30\nRETRY_BACKOFF = [0.5, 1, 2]\n",
        "app/handlers.py": "class OrderHandler(BaseHTTPRequestHandler):\n"
                           "    def do_POST(self) -> None:\n"
                           "        order_id = uuid.uuid4()\n"
                           "        self.send_response(201)\n",
    }
    for number, (name, content) in enumerate(files.items()):
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        subprocess.run([*git, "add", name], check=True, timeout=WAIT)
        subprocess.run([*git, "commit", "-q", "-m", f"step {number}: add {name}"],
                       check=True, timeout=WAIT)
    return path


@pytest.mark.parametrize("command", [
    ["log", "--stat", "--format=fuller"], ["log", "-p"], ["show", "HEAD"],
    ["ls-files", "-s"], ["rev-parse", "HEAD", "HEAD~1"], ["cat-file", "-p", "HEAD^{tree}"],
    ["status", "--porcelain=v2", "--branch"],
])
def test_git_output_is_not_flagged(repo: Path, command: list[str]) -> None:
    output = subprocess.run(["git", "-C", str(repo), *command], check=True, capture_output=True,
                            text=True, timeout=WAIT).stdout
    assert output
    assert GUARD.scan(output).findings == ()


async def _calls(params: StdioServerParameters,
                 calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    with anyio.fail_after(WAIT):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            results = [(await client.list_tools()).model_dump(mode="json")]
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, result
                results.append(result.model_dump(mode="json"))
            return results


@pytest.mark.anyio
async def test_the_time_server_output_is_not_flagged() -> None:
    params = StdioServerParameters(command=sys.executable, args=[
        "-m", "mcp_server_time", "--local-timezone", "UTC"])
    results = await _calls(params, [
        ("get_current_time", {"timezone": zone})
        for zone in ("Europe/Warsaw", "America/Argentina/Buenos_Aires", "Asia/Kolkata")
    ] + [("convert_time", {"source_timezone": "Europe/Berlin", "time": "16:30",
                           "target_timezone": "Pacific/Auckland"})])
    assert "Buenos_Aires" in str(results)
    for result in results:
        assert GUARD.scan(result).findings == ()


@pytest.mark.anyio
async def test_the_git_server_output_is_not_flagged(repo: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=[
        "-m", "mcp_server_git", "--repository", str(repo)])
    where = {"repo_path": str(repo)}
    results = await _calls(params, [("git_log", where), ("git_status", where),
                                    ("git_show", {**where, "revision": "HEAD~1"})])
    assert "get_password" in str(results)
    for result in results:
        assert GUARD.scan(result).findings == ()
