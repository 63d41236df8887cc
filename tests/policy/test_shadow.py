"""A candidate policy set is evaluated beside the active one; it is never enforced."""

from __future__ import annotations

from proctor.policy import Outcome

from .helpers import call, engine_with

ACTIVE = '@id("git") permit (principal, action == Action::"tool:git/git_log", resource);'
CANDIDATE = """
@id("git") permit (principal, action == Action::"tool:git/git_log", resource);
@id("candidate-forbid") forbid (principal, action == Action::"tool:git/git_log", resource)
when { context.args.repo_path == "/secret" };
"""


def test_a_shadow_set_records_differences_without_enforcing_them() -> None:
    engine = engine_with(ACTIVE)
    engine.shadow = engine.compile({"candidate.cedar": CANDIDATE}, revision=2)
    same = engine.decide(call("git/git_log", {"repo_path": "/public"}))
    differs = engine.decide(call("git/git_log", {"repo_path": "/secret"}))
    assert same.is_allowed
    assert differs.is_allowed  # the active set decides
    [difference] = list(engine.shadow_differences)
    assert difference.active.outcome is Outcome.ALLOW
    assert difference.candidate.outcome is Outcome.DENY
    assert difference.candidate.policy_ids == ("candidate-forbid",)
    assert difference.candidate.revision == 2
    assert difference.request.context["args"] == {"repo_path": "/secret"}
