"""Extending the engine's catalog with tools discovered at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.errors import PolicyValidationError
from proctor.policy import DecisionRequest, EntityRef, Outcome, Sensitivity, ToolSpec, load_bundle
from proctor.policy.context import call_context
from tests.policy.helpers import NOW

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
CODER = "spiffe://acme.example/agent/coder"


def _request(tool: str, args: dict[str, object]) -> DecisionRequest:
    return DecisionRequest(EntityRef("Agent", CODER), f"tool:{tool}", EntityRef("Tool", tool),
                           call_context(now=NOW, args=args, on_behalf_of="alice@acme.example"))


def test_a_discovered_tool_gets_an_action_typed_arguments_and_its_labels() -> None:
    engine = load_bundle(EXAMPLES).engine()
    before = _request("git/git_branch", {"repo_path": "/srv/repos/app", "branch_type": "HEAD"})
    assert engine.decide(before).code.value == "invalid_request"  # not in the schema yet

    engine.extend_catalog([ToolSpec("git", "git_branch", Sensitivity.CONFIDENTIAL, input_schema={
        "type": "object", "properties": {"repo_path": {"type": "string"},
                                         "branch_type": {"type": "string"}},
        "required": ["repo_path", "branch_type"]})])

    tool = engine.catalog.by_action("tool:git/git_branch")
    assert tool is not None and tool.sensitivity is Sensitivity.CONFIDENTIAL
    # no policy names it: it is decided by the rules for every tool, with typed arguments
    decision = engine.decide(before)
    assert (decision.outcome, decision.code.value) == (Outcome.DENY, "no_matching_permit")
    wrong = engine.decide(_request("git/git_branch", {"repo_path": 7, "branch_type": "HEAD"}))
    assert wrong.code.value == "invalid_request"
    # the policies written for the bundle's tools still decide as before
    allowed = engine.decide(_request("git/git_log", {"repo_path": "/srv/repos/app"}))
    assert allowed.outcome is Outcome.ALLOW


def test_a_schema_the_active_policies_do_not_fit_changes_nothing() -> None:
    engine = load_bundle(EXAMPLES).engine()
    schema, active, catalog = engine.schema, engine.active, engine.catalog
    # coder-git-read reads context.args.repo_path: a git_log without it cannot validate
    with pytest.raises(PolicyValidationError):
        engine.extend_catalog([ToolSpec("git", "git_log", input_schema={
            "type": "object", "properties": {"path": {"type": "string"}}})])
    assert (engine.schema, engine.active, engine.catalog) == (schema, active, catalog)
    assert engine.decide(_request("git/git_log", {"repo_path": "/srv/repos/app"})
                         ).outcome is Outcome.ALLOW
