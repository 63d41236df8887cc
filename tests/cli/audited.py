"""Running the CLI as an operator, and reading back what it audited as an auditor does:
through `proctor audit`."""

from __future__ import annotations

import json
import os
import pwd
from typing import Any

from typer.testing import CliRunner

from proctor.cli.main import app

runner = CliRunner()


def account() -> str:
    """The account running the tests, as the operating system names it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def run(*args: str, stdin: str | None = None) -> tuple[int, Any]:
    """Run one command with `--json`; its exit code and its JSON answer."""
    result = runner.invoke(app, [*args, "--json"], input=stdin)
    return result.exit_code, json.loads(result.stdout)


def human_events() -> list[dict[str, Any]]:
    """Every event with a human actor, oldest first."""
    code, found = run("audit", "search", "--actor-type", "human", "--limit", "1000")
    assert code == 0, found
    return [stored["event"] for stored in reversed(found)]


def chain_verifies() -> bool:
    code, report = run("audit", "verify")
    return code == 0 and bool(report["valid"])
