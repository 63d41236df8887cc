"""The AgentDojo replay harness (examples/agentdojo, bench/efficacy.py): it runs end to
end, fails loudly instead of measuring nothing, and its policies and grants are the ones
the method of docs/efficacy.md gives."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from typer.testing import CliRunner

from proctor.cli.main import app
from tests.bench.quick import bench_module
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "examples" / "agentdojo"
SUITES = ("workspace", "banking", "slack")
runner = CliRunner()

if importlib.util.find_spec("agentdojo") is None:
    if IN_CI:
        raise RuntimeError("agentdojo is missing: CI syncs the `efficacy` dependency group")
    pytest.skip("agentdojo is not installed: `uv sync --group efficacy`",
                allow_module_level=True)

# The harness imports AgentDojo (the suite's largest import, ~4 s of CPU): each test that
# needs it imports it, so that a worker that collects this module without running those
# tests does not pay for it.
if TYPE_CHECKING:
    from examples.agentdojo import suites


# The harness runs in this process: its own start as a process is not what it checks, and
# AgentDojo, the largest import of the suite, is imported once per process either way.
@pytest.mark.slow
def test_the_quick_run_ends_with_utility_asr_and_approval_rate_per_suite_and_overall(
        capsys: pytest.CaptureFixture[str]) -> None:
    returned = bench_module("efficacy.py").main(["--quick"])
    out, err = capsys.readouterr()
    assert returned == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["mode"] == "quick" and report["agentdojo"] == "0.1.35"
    assert set(report["suites"]) == set(SUITES)
    for row in [*report["suites"].values(), report["overall"]]:
        for key in ("utility", "asr", "approval_rate"):
            assert 0.0 <= row[key] <= 1.0, key
        assert row["counts"]["pairs"] > 0 and row["counts"]["user_tasks"] > 0
    for row in report["suites"].values():
        # every decision was audited and the hash chain verifies
        assert row["audit_chain_events"] > row["counts"]["pairs"]


# The command's failures: its exit status is what `main` returns.
def test_a_suite_without_a_policy_directory_fails_loudly(
        capsys: pytest.CaptureFixture[str]) -> None:
    # AgentDojo has it; no policies were written for it
    assert bench_module("efficacy.py").main(["--suite", "travel"]) == 2
    out, err = capsys.readouterr()
    assert "no policy directory for suite `travel`" in err
    assert out == ""


def test_a_suite_agentdojo_does_not_have_fails_loudly(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_module("efficacy.py").main(["--suite", "nonesuch"]) == 2
    assert "suite `nonesuch` is not in AgentDojo v1.2.2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def banking_tools() -> list[suites.ToolDefinition]:
    from examples.agentdojo import suites

    return suites.tool_definitions(suites.load_suite("banking"))


def _without(tmp_path: Path, tool: str, *, schema_only: bool) -> Path:
    copy = tmp_path / "banking"
    shutil.copytree(POLICIES / "banking", copy)
    data: dict[str, Any] = yaml.safe_load((copy / "tools.yaml").read_text())
    if schema_only:
        for entry in data["tools"]:
            if entry["name"] == tool:
                entry.pop("input_schema")
    else:
        data["tools"] = [e for e in data["tools"] if e["name"] != tool]
    (copy / "tools.yaml").write_text(yaml.safe_dump(data))
    return copy


@pytest.mark.parametrize("schema_only", [False, True])
def test_a_tool_without_a_schema_fails_loudly(
    tmp_path: Path, banking_tools: list[suites.ToolDefinition], schema_only: bool,
) -> None:
    from examples.agentdojo import suites
    from examples.agentdojo.catalog import catalog_entries

    directory = _without(tmp_path, "send_money", schema_only=schema_only)
    with pytest.raises(suites.HarnessError, match="tool `send_money` of suite `banking` has no "
                       "schema"):
        catalog_entries(directory, "banking", banking_tools)


def test_a_schema_that_is_not_agentdojos_fails_loudly(
    tmp_path: Path, banking_tools: list[suites.ToolDefinition],
) -> None:
    from examples.agentdojo import suites
    from examples.agentdojo.catalog import catalog_entries

    copy = tmp_path / "banking"
    shutil.copytree(POLICIES / "banking", copy)
    data: dict[str, Any] = yaml.safe_load((copy / "tools.yaml").read_text())
    [send] = [e for e in data["tools"] if e["name"] == "send_money"]
    send["input_schema"]["properties"].pop("recipient")
    (copy / "tools.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(suites.HarnessError, match="is not AgentDojo's"):
        catalog_entries(copy, "banking", banking_tools)


def test_the_committed_schemas_are_agentdojos() -> None:
    from examples.agentdojo import suites
    from examples.agentdojo.catalog import catalog_entries

    for name in SUITES:
        tools = suites.tool_definitions(suites.load_suite(name))
        assert [e["name"] for e in catalog_entries(POLICIES / name, name, tools)] == \
            [t.name for t in tools]


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITES)
def test_the_committed_grants_are_what_the_rule_drafts_from_the_requests(name: str) -> None:
    from examples.agentdojo import suites
    from examples.agentdojo.grants import draft_grant, load_grants

    tasks = suites.user_tasks(suites.load_suite(name))
    grants = load_grants(POLICIES / name, tasks)
    assert set(grants) == {t.id for t in tasks}
    for task in tasks:
        assert grants[task.id] == draft_grant(task), task.id


@pytest.mark.parametrize("name", SUITES)
def test_the_policies_validate_and_pass_their_test_cases(name: str) -> None:
    validated = runner.invoke(app, ["policy", "validate", str(POLICIES / name)])
    assert validated.exit_code == 0, validated.output
    tested = runner.invoke(app, ["policy", "test", str(POLICIES / name), "--json"])
    assert tested.exit_code == 0, tested.output
    outcome = json.loads(tested.output)
    assert outcome["failed"] == 0 and outcome["passed"] >= 8


def test_a_grant_constrains_only_values_the_request_names() -> None:
    from examples.agentdojo import suites
    from examples.agentdojo.grants import draft_grant

    task = suites.UserTask(
        "user_task_x", "Send 10 to GB29NWBK60161331926819 and tell Alice.",
        (suites.Call("send_money", {"recipient": "GB29NWBK60161331926819", "amount": 10.0}),
         suites.Call("send_direct_message", {"recipient": "Alice", "body": "done"}),
         suites.Call("send_direct_message", {"recipient": "Bob", "body": "done"}),
         suites.Call("add", {"users": ["Alice"], "n": 10, "flag": True})),
        (), None)
    assert draft_grant(task) == {
        "tools": ["add", "send_direct_message", "send_money"],
        # `amount` is a float, `body` is not in the request, `Bob` is not either
        "args": {"add": {"n": {"in": [10]}, "users": {"in": ["Alice"]}},
                 "send_money": {"recipient": {"in": ["GB29NWBK60161331926819"]}}},
    }
