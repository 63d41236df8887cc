"""`proctor task` and `proctor grant` as an operator uses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from proctor.cli.main import app
from proctor.clock import SystemClock
from proctor.grants import make_proof
from tests.identity.factories import manifest, public_jwk

CODER = "spiffe://acme.example/agent/coder"
runner = CliRunner()


@pytest.fixture
def coder_key(initialised_home: Path, monkeypatch: pytest.MonkeyPatch) -> ECKey:
    home = initialised_home
    monkeypatch.setenv("PROCTOR_OPERATOR", "olivia@acme.example")
    key = ECKey.generate_key("P-256", private=True)
    (home / "coder.jwk").write_text(json.dumps(public_jwk(key)))
    (home / "manifest.yaml").write_text(yaml.safe_dump(manifest().as_json()))
    code, _ = run("agent", "register", "coder", "--owner", "alice@acme.example", "--group",
                  "coding-agents", "--jwk", str(home / "coder.jwk"), "--manifest",
                  str(home / "manifest.yaml"))
    assert code == 0
    return key


def run(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_a_task_a_grant_a_use_a_revocation_and_the_tree(coder_key: ECKey) -> None:
    code, task = run("task", "start", CODER, "--purpose", "fix the build",
                     "--on-behalf-of", "alice@acme.example")
    assert code == 0, task
    scope = json.dumps({"tools": [{"tool": "git/*",
                                   "args": {"repo_path": {"prefix": ["/srv/repos/"]}}}]})
    code, grant = run("grant", "issue", "--task", task["task"], "--scope", scope, "--ttl", "120")
    assert code == 0, grant
    assert grant["accessor"].startswith("acc_")
    assert grant["agent"] == CODER

    checked_stdin = runner.invoke(app, ["grant", "check", "-", "--json"],
                                  input=grant["token"] + "\n")
    assert checked_stdin.exit_code == 0
    assert json.loads(checked_stdin.stdout)["grant_id"] == grant["grant_id"]
    code, bad_args = run("grant", "check", grant["token"], "--proof", "x", "--args", '"abc"')
    assert (code, bad_args["error"]["code"]) == (1, "request_invalid")

    key = coder_key.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    proof = make_proof(key, grant["token"], method="tools/call", target="mcp://git/git_log",
                       now=SystemClock().now())
    code, used = run("grant", "check", grant["token"], "--proof", proof, "--target",
                     "mcp://git/git_log", "--tool", "git/git_log", "--args",
                     json.dumps({"repo_path": "/srv/repos/app"}))
    assert (code, used["valid"]) == (0, True)
    code, replayed = run("grant", "check", grant["token"], "--proof", proof, "--target",
                         "mcp://git/git_log", "--tool", "git/git_log", "--args",
                         json.dumps({"repo_path": "/srv/repos/app"}))
    assert (code, replayed["error"]["code"]) == (1, "proof_replayed")

    code, revoked = run("grant", "revoke", grant["accessor"], "--reason", "done early",
                        "--by", "erin@acme.example")
    assert (code, revoked["revoked"]) == (0, [grant["grant_id"]])
    code, humans = run("audit", "search", "--actor-type", "human")
    assert code == 0
    assert [(e["event"]["actor"]["id"], e["event"]["action"], e["event"]["target"])
            for e in humans][:3] == [  # newest first; before them, the agent's registration
        ("erin@acme.example", "grant.revoke", grant["accessor"]),
        ("olivia@acme.example", "grant.issue", f'Grant::"{grant["accessor"]}"'),
        ("olivia@acme.example", "task.start", f'Task::"{task["task"]}"')]
    code, agents = run("audit", "search", "--actor-type", "agent", "--task", task["task"])
    # one issuance decision per tool the scope covers: the git tools of the catalog
    assert sorted(e["event"]["target"] for e in agents) == [
        f'Tool::"git/{t}"' for t in ("git_add", "git_checkout", "git_commit",
                                     "git_create_branch", "git_diff", "git_diff_staged",
                                     "git_diff_unstaged", "git_log", "git_reset", "git_show",
                                     "git_status")]
    assert {e["event"]["action"] for e in agents} == {"grant:issue"}
    code, invalid = run("grant", "check", grant["token"])
    assert (code, invalid["error"]["code"]) == (1, "grant_revoked")

    code, tree = run("grant", "tree", task["task"])
    assert code == 0
    assert [(n["kind"], n["revoked_reason"]) for n in tree["nodes"]] == [
        ("task", None), ("grant", "done early")]
    code, ended = run("task", "end", task["task"])
    assert (code, ended["revoked"]) == (0, [task["task"]])


def test_a_check_takes_only_a_calls_method_as_the_api_does(coder_key: ECKey) -> None:
    # any method was checked, the proof's nonce spent: a proof the agent made for a
    # gateway's listing passed here as valid, as it does nowhere a call is decided
    _, task = run("task", "start", CODER, "--purpose", "p", "--on-behalf-of", "alice@acme.example")
    _, grant = run("grant", "issue", "--task", task["task"], "--scope",
                   '{"tools": [{"tool": "git/git_log"}]}')
    key = coder_key.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    listing = make_proof(key, grant["token"], method="tools/list", target="mcp://git/git_log",
                         now=SystemClock().now())
    refused = runner.invoke(app, ["grant", "check", grant["token"], "--proof", listing,
                                  "--method", "tools/list", "--target", "mcp://git/git_log"])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: Invalid value for '--method': `tools/list` is not a "
                           "call's method: one of completion/complete, prompts/get, ")
    code, as_json = run("grant", "check", grant["token"], "--proof", listing, "--method",
                        "response")
    assert (code, as_json["error"]["code"]) == (2, "request_invalid")
    # a call's method is checked as before
    call = make_proof(key, grant["token"], method="resources/read", target="mcp://git/x",
                      now=SystemClock().now())
    code, checked = run("grant", "check", grant["token"], "--proof", call, "--method",
                        "resources/read", "--target", "mcp://git/x")
    assert (code, checked["valid"]) == (0, True)


def test_issuance_that_policy_denies_is_a_one_line_error(coder_key: ECKey) -> None:
    _, task = run("task", "start", CODER, "--purpose", "p", "--on-behalf-of", "alice@acme.example")
    result = runner.invoke(app, ["grant", "issue", "--task", task["task"], "--scope",
                                 '{"tools": [{"tool": "git/*"}]}', "--ttl", "3000"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: issuing `git/")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_issuance_the_policy_engine_fails_on_is_a_one_line_engine_error(
        coder_key: ECKey, initialised_home: Path) -> None:
    [baseline] = [p for p in (initialised_home / "policies").glob("*.cedar")
                  if "grants-for-trusted-agents" in p.read_text()]
    # the trusted agents' grant permit overflows Cedar's integers: it cannot be evaluated
    baseline.write_text(baseline.read_text().replace(
        "context.ttl_seconds <= 900", "context.ttl_seconds + 9223372036854775807 <= 900"))
    code, applied = run("policy", "apply")
    assert code == 0, applied
    _, task = run("task", "start", CODER, "--purpose", "p", "--on-behalf-of", "alice@acme.example")
    code, refused = run("grant", "issue", "--task", task["task"], "--scope",
                        '{"tools": [{"tool": "git/git_log"}]}')
    # it was issuance_denied, as a policy's deny
    assert (code, refused["error"]["code"]) == (1, "engine_error")
    assert "policy engine failed" in refused["error"]["message"]
    result = runner.invoke(app, ["grant", "issue", "--task", task["task"], "--scope",
                                 '{"tools": [{"tool": "git/git_log"}]}'])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: issuing `git/git_log` is denied: the policy engine")
    assert len(result.stderr.strip().splitlines()) == 1
    _, tree = run("grant", "tree", task["task"])
    assert [n["kind"] for n in tree["nodes"]] == ["task"]


@pytest.mark.parametrize(("scope", "message"), [
    ("{not json", "scope is not valid YAML"),
    ('{"tools": []}', "a scope needs a non-empty `tools` list"),
    ("@/nonexistent/scope.json", "cannot be read"),
])
def test_a_bad_scope_is_refused_and_nothing_is_issued(coder_key: ECKey, scope: str,
                                                      message: str) -> None:
    _, task = run("task", "start", CODER, "--purpose", "p", "--on-behalf-of", "alice@acme.example")
    code, error = run("grant", "issue", "--task", task["task"], "--scope", scope)
    assert code == 1
    assert error["error"]["code"] == "scope_invalid"
    assert message in error["error"]["message"]
    _, tree = run("grant", "tree", task["task"])
    assert [n["kind"] for n in tree["nodes"]] == ["task"]


def test_a_task_is_started_for_an_agent_named_as_at_registration(coder_key: ECKey) -> None:
    code, task = run("task", "start", "coder", "--purpose", "p",
                     "--on-behalf-of", "alice@acme.example")
    assert code == 0, task
    assert task["agent"] == CODER
    code, refused = run("task", "start", "spiffe://acme.example/not-an-agent", "--purpose", "p",
                        "--on-behalf-of", "alice@acme.example")
    assert code == 1
    assert refused["error"]["code"] == "agent_id_invalid"
