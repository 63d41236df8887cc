"""`proctor policy …` as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.config import load_settings
from proctor.runtime import open_runtime

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
runner = CliRunner()


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(EXAMPLES, copy)
    return copy


def test_validate_accepts_the_examples() -> None:
    result = runner.invoke(app, ["policy", "validate", str(EXAMPLES), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["valid"] is True


def test_validate_prints_file_line_column_lines_and_exits_1(examples: Path) -> None:
    (examples / "broken.cedar").write_text(
        "permit (principal, action, resource);\nforbid (principal, action, resource) when { ;\n"
    )
    result = runner.invoke(app, ["policy", "validate", str(examples)])
    assert result.exit_code == 1
    assert result.stdout.strip().splitlines() == ["broken.cedar:2:45: unexpected token `;`"]


def test_validate_on_an_empty_directory_says_everything_would_be_denied(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "every request would be denied" in result.stdout


def test_the_example_policy_tests_pass() -> None:
    result = runner.invoke(app, ["policy", "test", str(EXAMPLES), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == 0
    assert report["passed"] >= 30


def test_changing_one_expected_decision_fails_with_a_readable_diff(examples: Path) -> None:
    cases_file = examples / "support.test.yaml"
    doc = yaml.safe_load(cases_file.read_text())
    doc["cases"][0]["expect"]["decision"] = "deny"
    cases_file.write_text(yaml.safe_dump(doc))
    result = runner.invoke(app, ["policy", "test", str(examples)])
    assert result.exit_code == 1
    assert "FAIL support.test.yaml: the support agent searches the knowledge base" in result.stdout
    assert "decision: expected deny, got allow" in result.stdout
    assert "1 failed" in result.stdout


def test_a_malformed_test_file_is_a_one_line_error(examples: Path) -> None:
    (examples / "bad.test.yaml").write_text("cases: [{request: {agent: x}}]\n")
    result = runner.invoke(app, ["policy", "test", str(examples)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: test file `bad.test.yaml`: case 1 needs `expect.decision`"
    )


def test_explain_shows_the_determining_policy_with_its_source_lines(tmp_path: Path) -> None:
    request = tmp_path / "req.yaml"
    request.write_text(yaml.safe_dump({
        "agent": "spiffe://acme.example/agent/support", "tool": "crm/issue_refund",
        "args": {"customer_id": "c-1", "amount_cents": 25000},
    }))
    result = runner.invoke(app, ["policy", "explain", str(request), "--policies", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert "decision: approval_required" in result.stdout
    assert "determining: support-large-refund (support.cedar:" in result.stdout
    assert '@approval("refunds over 50.00 need a human\'s approval")' in result.stdout
    assert "not applicable (scope excludes this request)" in result.stdout

    as_json = json.loads(runner.invoke(
        app, ["policy", "explain", str(request), "--policies", str(EXAMPLES), "--json"]
    ).stdout)
    assert [p["id"] for p in as_json["determining"]] == ["support-large-refund"]
    not_satisfied = {p["id"] for p in as_json["not_satisfied"]}
    assert {"support-small-refund", "refund-ceiling"} <= not_satisfied
    assert "coder-git-read" in {p["id"] for p in as_json["out_of_scope"]}


def test_explain_rejects_a_malformed_request_in_one_line(tmp_path: Path) -> None:
    request = tmp_path / "req.yaml"
    request.write_text("agent: x\nweird: 1\n")
    result = runner.invoke(app, ["policy", "explain", str(request), "--policies", str(EXAMPLES)])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: request has unknown key `weird`"


def test_diff_reports_requests_decided_differently(examples: Path, tmp_path: Path) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(examples, candidate)
    support = candidate / "support.cedar"
    text = support.read_text().replace("<= 5000", "<= 20000").replace("> 5000", "> 20000")
    support.write_text(text)
    requests = tmp_path / "requests.yaml"
    requests.write_text(yaml.safe_dump([
        {"agent": "spiffe://acme.example/agent/support", "tool": "crm/issue_refund",
         "args": {"customer_id": "c-1", "amount_cents": 15000}},
        {"agent": "spiffe://acme.example/agent/support", "tool": "kb/search_articles",
         "args": {"query": "x"}},
    ]))
    result = runner.invoke(app, ["policy", "diff", str(examples), str(candidate),
                                 "--requests", str(requests), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["requests"] == 2
    [difference] = report["differences"]
    assert difference["active"]["decision"] == "approval_required"
    assert difference["candidate"]["decision"] == "allow"
    assert difference["candidate"]["policy_ids"] == ["support-small-refund"]


def test_diff_refuses_an_invalid_candidate(examples: Path, tmp_path: Path) -> None:
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "x.cedar").write_text("permit (")
    requests = tmp_path / "r.yaml"
    requests.write_text("[]")
    result = runner.invoke(app, ["policy", "diff", str(examples), str(candidate),
                                 "--requests", str(requests)])
    assert result.exit_code == 1
    assert "x.cedar:1:" in result.stdout


@pytest.mark.parametrize(("document", "message"), [
    ("agent: x\ntool: git/git_log\ndelegation_chain: 5\n",
     "error: `delegation_chain` must be a list of agent ids"),
    ("agent: x\ntool: git/git_log\napproved: 'false'\n", "error: `approved` must be true or false"),
])
def test_explain_rejects_mistyped_request_fields(tmp_path: Path, document: str,
                                                 message: str) -> None:
    request = tmp_path / "req.yaml"
    request.write_text(document)
    result = runner.invoke(app, ["policy", "explain", str(request), "--policies", str(EXAMPLES)])
    assert result.exit_code == 1
    assert result.stderr.strip() == message


@pytest.mark.parametrize(("expect", "message"), [
    ("{decision: [allow]}", "`expect.decision` must be a string"),
    ("{decision: allow, policies: [1, a]}", "`expect.policies` must be a list of strings"),
])
def test_a_mistyped_expectation_is_a_one_line_error(examples: Path, expect: str,
                                                    message: str) -> None:
    (examples / "bad.test.yaml").write_text(
        f"cases: [{{request: {{agent: x, tool: git/git_log}}, expect: {expect}}}]\n")
    result = runner.invoke(app, ["policy", "test", str(examples)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: test file `bad.test.yaml`: case 1: {message}"


def test_apply_makes_a_new_revision_active_and_an_invalid_set_changes_nothing(
    tmp_path: Path, initialised_home: Path,
) -> None:
    policies = initialised_home / "policies"
    (policies / "extra.cedar").write_text(
        '@id("extra-kb")\npermit (principal, action == Action::"tool:kb/search_articles", '
        'resource);\n')
    applied = runner.invoke(app, ["policy", "apply", "--json"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["revision"] == 2

    (policies / "broken.cedar").write_text("permit (principal, action, resource) when { nope };")
    refused = runner.invoke(app, ["policy", "apply", "--json"])
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["valid"] is False
    again = runner.invoke(app, ["policy", "apply", str(tmp_path / "missing"), "--json"])
    assert again.exit_code == 1
    runtime = open_runtime(load_settings())
    try:
        active = runtime.policies.active_revision()
        assert active is not None and active.id == 2
        assert runtime.policies.list_revisions()[0].id == 2  # nothing stored for the refusals
    finally:
        runtime.close()
