"""A usage error on the command line (an unknown command or option, a bad or missing
value) is one line, ``error: …``, and exit 2; with ``--json``, the CLI's JSON error; the
help of a group named alone is still its help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from proctor.cli.main import app

CASES = [
    (["audit", "search", "--limit", "-1"],
     "Invalid value for '--limit': Input should be greater than or equal to 1"),
    (["audit", "search", "--nope"], "No such option: --nope"),
    (["nosuch"], "No such command 'nosuch'."),
    (["grant", "check"], "Missing argument 'token'."),
    (["audit", "tail", "-n", "9" * 30], "Invalid value for '-n'"),
]


@pytest.mark.parametrize(("args", "said"), CASES)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], said: str) -> None:
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {said}")


@pytest.mark.parametrize(("args", "said"), CASES[:2])
def test_with_json_a_usage_error_is_the_cli_json_error(args: list[str], said: str) -> None:
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "request_invalid" and error["message"].startswith(said)


def test_the_command_run_as_a_process_says_it_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "proctor.cli", "audit", "search", "--limit",
                           "0"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: Invalid value for '--limit': Input should be greater than or equal to 1"]


def test_a_group_named_alone_still_shows_its_help_and_a_command_its_own_exit() -> None:
    shown = CliRunner().invoke(app, ["audit"])
    assert shown.exit_code == 2 and "verify" in shown.output
    assert CliRunner().invoke(app, ["--version"]).exit_code == 0
    assert CliRunner().invoke(app, ["audit", "verify", "--help"]).exit_code == 0
