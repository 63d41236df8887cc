"""`proctor secret` as an operator uses it: values in through stdin or the environment only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from proctor.cli.main import app

from .conftest import VALUE

runner = CliRunner()


# every test in a copy of an initialised home
pytestmark = pytest.mark.usefixtures("initialised_home")


def run(*args: str, stdin: str | None = None) -> tuple[int, Any, str]:
    result = runner.invoke(app, [*args, "--json"], input=stdin)
    everything = result.stdout + result.stderr
    return result.exit_code, json.loads(result.stdout), everything


def test_set_list_replace_and_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    code, stored, shown = run("secret", "set", "github.token", "--by", "alice@acme.example",
                              stdin=VALUE + "\n")
    assert (code, stored["name"], stored["version"]) == (0, "github.token", 1)
    monkeypatch.setenv("NEW_GITHUB_TOKEN", VALUE + "-2")
    code, replaced, shown2 = run("secret", "set", "github.token", "--from-env",
                                 "NEW_GITHUB_TOKEN", "--by", "bob@acme.example")
    assert (code, replaced["version"], replaced["updated_by"]) == (0, 2, "bob@acme.example")
    code, listed, shown3 = run("secret", "list")
    assert code == 0
    assert [(s["name"], s["version"], s["created_by"]) for s in listed["secrets"]] == [
        ("github.token", 2, "alice@acme.example")]
    code, deleted, shown4 = run("secret", "delete", "github.token", "--by",
                                "alice@acme.example")
    assert (code, deleted["deleted"], deleted["revoked"]) == (0, True, [])
    assert run("secret", "list")[1] == {"secrets": []}
    for output in (shown, shown2, shown3, shown4):
        assert VALUE not in output

    code, events, _ = run("audit", "search", "--actor-type", "human")
    assert code == 0
    assert [(e["event"]["actor"]["id"], e["event"]["action"]) for e in events][:3] == [
        ("alice@acme.example", "secret.delete"), ("bob@acme.example", "secret.put"),
        ("alice@acme.example", "secret.put")]  # newest first; before them, init's admin token


def test_the_human_output_is_one_line_and_names_no_value() -> None:
    result = runner.invoke(app, ["secret", "set", "crm.key", "--by", "alice@acme.example"],
                           input=VALUE)
    assert result.exit_code == 0
    assert result.stdout == "secret crm.key stored (version 1)\n"
    listed = runner.invoke(app, ["secret", "list"])
    assert "crm.key" in listed.stdout and VALUE not in listed.stdout


def test_a_value_on_the_command_line_is_refused_without_being_echoed() -> None:
    code, error, shown = run("secret", "set", "github.token", VALUE)
    assert (code, error["error"]["code"]) == (1, "secret_value_invalid")
    assert "never taken from the command line" in error["error"]["message"]
    assert VALUE not in shown
    assert run("secret", "list")[1] == {"secrets": []}


@pytest.mark.parametrize(("args", "stdin", "code", "message"), [
    (["set", "github token"], VALUE, "secret_name_invalid",
     "invalid secret name: character 7 is not one of A-Z a-z 0-9 _ . -"),
    (["set", VALUE], "x", "secret_name_invalid",
     "invalid secret name: it looks like a credential (github_token); was the value given "
     "as the name?"),
    (["set", "github.token"], "", "secret_value_invalid", "a secret value cannot be empty"),
    (["set", "github.token"], "\n", "secret_value_invalid", "a secret value cannot be empty"),
    (["set", "github.token", "--from-env", "PROCTOR_TEST_UNSET"], None, "secret_value_invalid",
     "environment variable `PROCTOR_TEST_UNSET` is not set or empty"),
    (["set", "big"], "x" * 70_000, "secret_value_invalid",
     "a secret value is at most 65536 bytes"),
    (["delete", "nope"], None, "secret_unknown", "secret `nope` does not exist"),
])
def test_bad_input_is_a_one_line_error_and_changes_nothing(args: list[str], stdin: str | None,
                                                           code: str, message: str) -> None:
    exit_code, error, shown = run("secret", *args, stdin=stdin)
    assert (exit_code, error["error"]) == (1, {"code": code, "message": message})
    assert VALUE not in shown
    plain = runner.invoke(app, ["secret", *args], input=stdin)
    assert plain.exit_code == 1
    assert plain.stderr == f"error: {message}\n"
    assert run("secret", "list")[1] == {"secrets": []}


def test_input_that_is_not_utf8_is_refused() -> None:
    result = runner.invoke(app, ["secret", "set", "x"], input=b"\xff\xfe\x00")
    assert result.exit_code == 1
    assert result.stderr == "error: standard input is not UTF-8 text\n"
