"""docs/quickstart.md works as written: its shell blocks run, in order, in a fresh
directory, against the real CLI, the real MCP SDK and the quickstart's own MCP
server; the approval is given from a "second terminal" as the page shows; and the
client's view of the calls is exactly what the page prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

from .markdown import DOCS, Block, blocks

pytestmark = pytest.mark.slow

QUICKSTART = DOCS / "quickstart.md"
MANUAL = "<!-- test: manual -->"
TRY_OUTPUT = "<!-- test: output of try_notes.py -->"
TIMEOUT_SECONDS = 300

# What the test runs in place of the blocks a person runs by hand: the client in the
# background (unbuffered, so that its lines show as it prints them), then the approval
# from the "second terminal" (polled, bounded). A person looks once the client waits:
# the test too waits for the line of the call before the held one (a `grep`), then asks
# `proctor approvals list` until the request is there (a process start, about 1 s of
# CPU, each time: polling with it from the start cost the test ~10 s of CPU).
TRY_IN_BACKGROUND = """
python -u try_notes.py mcp.json > try.out 2>&1 &
TRY_PID=$!
"""
APPROVE_FROM_SECOND_TERMINAL = """
for _ in $(seq 1 1500); do
  grep -q '^write_note {"name": "todo"' try.out && break
  kill -0 "$TRY_PID" 2>/dev/null || break
  sleep 0.2
done
APPROVAL=""
for _ in $(seq 1 300); do
  APPROVAL=$(proctor approvals list --json | python -c '
import json, sys
pending = json.load(sys.stdin)["approvals"]
print(pending[0]["id"] if pending else "")')
  [ -n "$APPROVAL" ] && break
  kill -0 "$TRY_PID" 2>/dev/null || break
  sleep 0.2
done
[ -n "$APPROVAL" ] || { echo "no approval request appeared"; cat try.out; exit 1; }
proctor approvals approve "$APPROVAL" --by colleague@example.com
wait "$TRY_PID"
"""


def _marked_blocks() -> list[tuple[str, Block]]:
    """Each fenced block with the marker comment just above it ("" if none)."""
    lines = QUICKSTART.read_text(encoding="utf-8").splitlines()
    out = []
    for block in blocks(QUICKSTART.read_text(encoding="utf-8")):
        above = [line for line in lines[:block.line - 1] if line.strip()]
        marker = above[-1].strip() if above and above[-1].startswith("<!--") else ""
        out.append((marker, block))
    return out


def _script() -> str:
    parts = ["set -euo pipefail"]
    manual = [b.text for m, b in _marked_blocks() if m == MANUAL and b.language == "sh"]
    clone, run_client, approve = manual
    assert "scripts/demo" in clone and "source .venv/bin/activate" in clone
    assert run_client.strip() == "python try_notes.py mcp.json"
    assert "proctor approvals list" in approve
    assert "proctor approvals approve apr_… --by colleague@example.com" in approve
    for marker, block in _marked_blocks():
        if block.language != "sh":
            continue
        if marker != MANUAL:
            parts.append(block.text)
        elif block.text == run_client:
            parts.append(TRY_IN_BACKGROUND)
        elif block.text == approve:
            parts.append(APPROVE_FROM_SECOND_TERMINAL)
    return "\n".join(parts)


def _shown_try_output() -> list[str]:
    (block,) = [b for m, b in _marked_blocks() if m == TRY_OUTPUT]
    return block.text.strip().splitlines()


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    for tool in ("openssl", "sha256sum", "bash"):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"the quickstart needs `{tool}` (CI must run it)")
            pytest.skip(f"the quickstart needs `{tool}`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCTOR_")}
    # `source .venv/bin/activate` in the clone is this interpreter's environment here
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)
    return env


def test_the_quickstart_runs_as_written(environment: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(["bash", "-c", _script()], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    work = tmp_path / "notes-quickstart"
    assert "5 passed, 0 failed" in result.stdout
    # the hour-long grant and the start after the task ended were both refused
    assert result.stdout.count("refused, as it should be") == 2
    assert "the grant or one it derives from is revoked" in result.stderr
    # the client saw exactly what the page shows
    assert (work / "try.out").read_text().strip().splitlines() == _shown_try_output()
    # what reached the server: the allowed writes, nothing refused
    notes = sorted(p.name for p in (work / "notes-data").iterdir())
    assert notes == ["private-diary.md", "shared-plan.md", "shopping.md", "todo.md"]
    assert "chain verifies" in result.stdout
    # the key and the grant are for the owner's eyes only
    assert (work / "notes-agent.key").stat().st_mode & 0o077 == 0
    assert (work / "notes.grant").stat().st_mode & 0o077 == 0
    assert (work / ".proctor").stat().st_mode & 0o077 == 0


def test_the_page_leaves_no_output_to_be_filled_in() -> None:
    text = QUICKSTART.read_text(encoding="utf-8")
    assert re.findall(r"\b[A-Z]+_OUTPUT\b", text) == []
