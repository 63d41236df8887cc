"""The decision point answers with a value and never fails open."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import PolicyValidationError
from proctor.policy import (
    DecisionRequest,
    Outcome,
    PolicyEngine,
    ReasonCode,
    ToolCatalog,
    ToolSpec,
)
from proctor.policy.engine import context_json
from proctor.policy.entities import principal_entities
from proctor.policy.schema import CompiledSchema

from .helpers import CATALOG, CODER, OTHER, call, engine_with

GIT_READ = """
@id("git-read") @reason("coders read repos under /srv")
permit (principal in Group::"coders", action == Action::"tool:git/git_log", resource)
when { context.args.repo_path like "/srv/*" };
"""


def test_a_matching_permit_allows_with_its_policy_and_reason() -> None:
    decision = engine_with(GIT_READ).decide(call("git/git_log", {"repo_path": "/srv/app"}))
    assert decision.outcome is Outcome.ALLOW
    assert decision.code is ReasonCode.PERMITTED
    assert decision.policy_ids == ("git-read",)
    assert decision.reasons == ("coders read repos under /srv",)
    assert decision.revision == 1


def test_no_matching_permit_denies_and_says_so() -> None:
    decision = engine_with(GIT_READ).decide(call("git/git_log", {"repo_path": "/etc"}))
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.NO_PERMIT
    assert "no policy permits `tool:git/git_log`" in decision.reasons[0]


def test_a_forbid_wins_over_a_permit() -> None:
    policies = GIT_READ + """
    @id("no-traversal") @reason("no climbing out")
    forbid (principal, action == Action::"tool:git/git_log", resource)
    when { context.args.repo_path like "*..*" };
    """
    decision = engine_with(policies).decide(call("git/git_log", {"repo_path": "/srv/../etc"}))
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.FORBIDDEN
    assert decision.policy_ids == ("no-traversal",)
    assert decision.reasons == ("no climbing out",)


def test_no_active_policy_set_denies_everything() -> None:
    decision = engine_with(None).decide(call("git/git_log", {"repo_path": "/srv/app"}))
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.NO_POLICIES
    assert decision.revision is None


APPROVALS = """
@id("pay") @approval("payments need a human")
permit (principal, action == Action::"tool:pay/create_payment", resource)
when { context.args.amount_cents > 0 };
@id("small-pay") @reason("small payments are fine")
permit (principal, action == Action::"tool:pay/create_payment", resource)
when { context.args.amount_cents <= 100 };
@id("ceiling") @reason("never above 1000")
forbid (principal, action == Action::"tool:pay/create_payment", resource)
when { context.args.amount_cents > 1000 };
"""


def test_a_permit_annotated_approval_asks_for_a_human() -> None:
    decision = engine_with(APPROVALS).decide(call("pay/create_payment", {"amount_cents": 500}))
    assert decision.outcome is Outcome.APPROVAL_REQUIRED
    assert decision.policy_ids == ("pay",)
    assert decision.reasons == ("payments need a human",)


def test_a_matching_approval_turns_the_same_request_into_an_allow() -> None:
    request = call("pay/create_payment", {"amount_cents": 500}, approved=True)
    decision = engine_with(APPROVALS).decide(request)
    assert decision.outcome is Outcome.ALLOW
    assert decision.reasons == ("approved: payments need a human",)


def test_the_stricter_of_two_satisfied_permits_holds_the_approval() -> None:
    # "pay" asks for approval, "small-pay" does not: the approval still applies.
    decision = engine_with(APPROVALS).decide(call("pay/create_payment", {"amount_cents": 50}))
    assert decision.outcome is Outcome.APPROVAL_REQUIRED
    assert decision.policy_ids == ("pay",)


def test_a_forbid_wins_over_an_approved_permit() -> None:
    request = call("pay/create_payment", {"amount_cents": 5000}, approved=True)
    decision = engine_with(APPROVALS).decide(request)
    assert decision.outcome is Outcome.DENY
    assert decision.policy_ids == ("ceiling",)


def test_approval_on_a_forbid_that_ignores_approvals_is_rejected_at_validation() -> None:
    with pytest.raises(PolicyValidationError) as caught:
        engine_with('@approval("x") forbid (principal, action, resource);')
    assert "needs `!context.approved`" in str(caught.value)


def test_a_forbid_with_approval_holds_only_what_would_be_allowed_once_approved() -> None:
    engine = engine_with(APPROVALS + """
@id("hold") @approval("held for a human")
forbid (principal, action, resource) when { !context.approved };
""")
    held = engine.decide(call("pay/create_payment", {"amount_cents": 100}))
    assert held.outcome is Outcome.APPROVAL_REQUIRED and held.policy_ids == ("hold",)
    assert engine.decide(call("pay/create_payment", {"amount_cents": 100}, approved=True)
                         ).outcome is Outcome.ALLOW
    # over the ceiling a forbid without @approval decides: no approval is asked for
    assert engine.decide(call("pay/create_payment", {"amount_cents": 5000})
                         ).outcome is Outcome.DENY


def test_a_policy_that_errors_denies_even_where_cedar_would_skip_it() -> None:
    # Cedar skips an erroring policy; here that would leave the permit standing
    # and allow. proctor denies and carries the error instead.
    policies = GIT_READ + """
    @id("overflowing-forbid")
    forbid (principal, action == Action::"tool:git/git_log", resource)
    when { context.args has max_count && context.args.max_count + 9223372036854775807 < 0 };
    """
    request = call("git/git_log", {"repo_path": "/srv/app", "max_count": 5})
    decision = engine_with(policies).decide(request)
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.ENGINE_ERROR
    assert any("overflowing-forbid" in e for e in decision.errors)


def test_an_exception_inside_the_engine_is_a_deny_with_the_error() -> None:
    request = call("git/git_log", {"repo_path": "/srv/app"}, purpose=object())
    decision = engine_with(GIT_READ).decide(request)
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.ENGINE_ERROR
    assert decision.errors == ("decision failed: TypeError",)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"repo_path": 7}, "argument `args.repo_path` must be of type String"),
        ({}, "argument `args.repo_path` is required"),
        ({"repo_path": "/srv/a", "max_count": True},
         "argument `args.max_count` must be of type Long"),
        ({"repo_path": "/srv/a", "max_count": 2**70}, "argument `args.max_count` is out of range"),
    ],
)
def test_arguments_that_do_not_fit_the_tool_schema_are_an_invalid_request(
    args: dict[str, object], message: str
) -> None:
    decision = engine_with(GIT_READ).decide(call("git/git_log", args))
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.INVALID_REQUEST
    assert decision.errors[0].startswith(message)


def test_untyped_arguments_are_dropped_before_cedar_sees_them() -> None:
    policies = """
    permit (principal, action == Action::"tool:pay/create_payment", resource)
    when { context.args has tags && context.args.tags.contains("ok") };
    """
    args = {"amount_cents": 1, "tags": ["ok"], "ratio": 0.5, "unknown": {"x": 1}}
    assert engine_with(policies).decide(call("pay/create_payment", args)).is_allowed


def test_a_context_that_does_not_match_the_schema_is_an_invalid_request_without_values() -> None:
    request = call("git/git_log", {"repo_path": "/srv/app"})
    broken = dict(request.context, approved="yes-secret-value")
    decision = engine_with(GIT_READ).decide(type(request)(
        request.principal, request.action, request.resource, broken))
    assert decision.code is ReasonCode.INVALID_REQUEST
    assert "does not match the schema" in decision.errors[0]
    assert "secret" not in " ".join(decision.errors)


def test_an_unknown_tool_is_an_invalid_request() -> None:
    decision = engine_with(GIT_READ).decide(call("git/git_push", {"repo_path": "/srv/app"}))
    assert decision.code is ReasonCode.INVALID_REQUEST


def test_policies_see_agent_trust_state_and_risk() -> None:
    policies = """
    permit (principal, action == Action::"tool:git/git_log", resource);
    @id("drift") forbid (principal, action in Action::"call", resource)
    when { principal.trust_state == "drifted" && principal.risk_score > 30 };
    """
    engine = engine_with(policies)
    assert engine.decide(call("git/git_log", {"repo_path": "/x"})).is_allowed
    drifted = engine.decide(call("git/git_log", {"repo_path": "/x"}, agent=OTHER))
    assert drifted.policy_ids == ("drift",)


def test_context_carries_delegation_time_source_and_sensitivity() -> None:
    policies = """
    permit (principal, action == Action::"tool:git/git_log", resource)
    when {
      context.delegation.depth == 1 &&
      context.delegation.chain.contains("spiffe://acme.example/agent/planner") &&
      context.time.hour == 10 && context.time.weekday == 0 &&
      context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) &&
      context.sensitivity_seen == 2 && context.purpose == "build" && context.task == "t-1"
    };
    """
    from proctor.policy.catalog import Sensitivity

    request = call(
        "git/git_log", {"repo_path": "/x"}, delegation_chain=["spiffe://acme.example/agent/planner"],
        source_ip="10.1.2.3", sensitivity_seen=Sensitivity.CONFIDENTIAL, purpose="build",
        task="t-1",
    )
    assert engine_with(policies).decide(request).is_allowed


def test_a_schema_cedar_cannot_parse_is_a_validation_error() -> None:
    with pytest.raises(PolicyValidationError) as caught:
        CompiledSchema("entity Agent = ;")
    assert caught.value.diagnostics[0].file == "<schema>"


def test_unknown_action_names_share_one_slice_instead_of_growing_the_cache() -> None:
    engine = engine_with(GIT_READ)
    assert engine.active is not None
    for n in range(50):
        assert not engine.decide(call(f"git/made_up_{n}", {"repo_path": "/srv/x"})).is_allowed
    assert len(engine.active._slices) == 1


def test_policies_see_humans_in_canonical_form_whatever_spelling_they_were_given() -> None:
    principals = principal_entities({
        "humans": [{"id": "Mallory@ACME.example", "roles": ["contractor"]}],
        "agents": [{"id": CODER, "owner": "MALLORY@acme.example"}],
    })
    engine = PolicyEngine(CATALOG, principals)
    engine.activate(engine.compile({"test.cedar": """
    permit (principal, action == Action::"tool:git/git_log", resource);
    @id("no-mallory-agents") forbid (principal, action, resource)
    when { principal.owner == Human::"mallory@acme.example" };
    @id("not-for-mallory") forbid (principal, action, resource)
    when { context.on_behalf_of == "mallory@acme.example" };
    @id("contractors-agents") forbid (principal, action, resource)
    when { principal.owner.roles.contains("contractor") };
    """}, revision=1))
    decision = engine.decide(call("git/git_log", {"repo_path": "/x"},
                                  on_behalf_of="\uff2dallory@acme.example"))
    assert decision.outcome is Outcome.DENY
    assert set(decision.policy_ids) == {"no-mallory-agents", "not-for-mallory",
                                        "contractors-agents"}


def test_a_policy_sees_an_optional_argument_that_pydantic_writes_as_nullable() -> None:
    mail = ToolCatalog([ToolSpec("mail", "send", input_schema={
        "type": "object",
        "properties": {"to": {"type": "array", "items": {"type": "string"}},
                       "bcc": {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                         {"type": "null"}], "default": None}},
        "required": ["to"]})])
    engine = engine_with(
        'permit(principal, action, resource);\n'
        '@id("no-bcc")\nforbid(principal, action == Action::"tool:mail/send", resource)\n'
        'when { context.args has bcc && !context.args.bcc.isEmpty() };', catalog=mail)
    hidden = engine.decide(call("mail/send", {"to": ["a@x"], "bcc": ["spy@y"]}))
    assert (hidden.outcome, hidden.policy_ids) == (Outcome.DENY, ("no-bcc",))
    assert engine.decide(call("mail/send", {"to": ["a@x"], "bcc": None})).is_allowed
    assert engine.decide(call("mail/send", {"to": ["a@x"]})).is_allowed


def test_a_policy_can_trust_an_argument_only_when_the_grant_constrains_it() -> None:
    engine = engine_with(
        'permit(principal, action == Action::"tool:git/git_log", resource)\n'
        'when { context.grant.constrained.contains("repo_path") };')
    assert engine.decide(call("git/git_log", {"repo_path": "/a"},
                              grant_constrained=["repo_path"])).is_allowed
    assert not engine.decide(call("git/git_log", {"repo_path": "/a"})).is_allowed


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_the_context_is_given_to_cedar_as_json_dumps_writes_it(context: dict[str, Any]) -> None:
    assert context_json(context) == json.dumps(context)


def test_a_context_that_holds_itself_is_a_deny_that_says_so() -> None:
    request = call("git/git_log", {"repo_path": "/srv/app"})
    looped: dict[str, Any] = dict(request.context)
    looped["delegation"] = {"depth": 0, "chain": [looped]}
    with pytest.raises(ValueError, match="Circular reference"):
        context_json(looped)
    decision = engine_with(GIT_READ).decide(DecisionRequest(
        request.principal, request.action, request.resource, looped))
    assert decision.outcome is Outcome.DENY
    assert decision.code is ReasonCode.ENGINE_ERROR
    assert decision.errors == ("decision failed: ValueError",)
