"""One tool call decided end to end: grant, agent, policy, audit — fail-closed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from proctor.audit import ActorType, EventFilter, search_events
from proctor.clock import FrozenClock
from proctor.documents import MAX_DEPTH
from proctor.enforcement import ToolCall
from proctor.errors import GrantError
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.policy import Outcome
from proctor.runtime import Runtime, issuer_for
from tests.identity.factories import manifest

from .conftest import CODER, SUPPORT, TARGET, Agents, refund

REFUND = [{"tool": "crm/issue_refund"}]


def _events(runtime: Runtime) -> list[Mapping[str, Any]]:
    return [e.event for e in search_events(runtime.store, EventFilter())]


def test_an_allowed_call_is_audited_with_the_grants_accessor_and_never_its_token(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    verdict = agents.call(grant, "crm/issue_refund", refund(2500))
    assert (verdict.outcome, verdict.code) == (Outcome.ALLOW, "allow")
    assert verdict.policy_ids == ("support-small-refund",)
    [event] = [e for e in _events(runtime) if e["id"] == verdict.event_id]
    assert event["actor"] == {"type": "agent", "id": SUPPORT, "on_behalf_of": "bob@acme.example"}
    assert event["grant"] == grant.accessor == verdict.accessor
    assert event["outcome"] == "allowed"
    assert grant.token not in str(_events(runtime))


def test_a_call_outside_the_grants_scope_is_denied_before_policy(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/issue_refund",
                                    "args": {"amount_cents": {"max": 1000}}}])
    verdict = agents.call(grant, "crm/issue_refund", refund(2500))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_out_of_scope")
    assert verdict.policy_ids == ()
    [event] = [e for e in _events(runtime) if e["id"] == verdict.event_id]
    assert event["outcome"] == "denied" and event["detail"]["code"] == "grant_out_of_scope"
    # the caller proved the grant's key: the refusal is the agent's own event
    assert event["actor"]["type"] == "agent" and event["actor"]["id"] == SUPPORT


def test_a_forbid_names_its_policy(agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    verdict = agents.call(grant, "crm/issue_refund", refund(250_000))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "policy_forbid")
    assert verdict.policy_ids == ("refund-ceiling",)
    assert verdict.reasons == ("no agent refunds more than 1,000.00",)


def test_a_garbage_token_is_a_deny_audited_as_unauthenticated(
    runtime: Runtime, agents: Agents,
) -> None:
    verdict = runtime.enforcer.decide_call("not.a.token", "nor.a.proof",
                                           ToolCall("crm/issue_refund", refund(1), target=TARGET))
    assert verdict.outcome is Outcome.DENY
    assert verdict.code.startswith("grant_")
    [event] = [e for e in _events(runtime) if e["id"] == verdict.event_id]
    assert event["actor"]["type"] == "system" and event["actor"]["id"] == "unauthenticated"


def test_a_replayed_proof_is_denied(agents: Agents, runtime: Runtime) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    proof = agents.proof(grant)
    call = ToolCall("crm/issue_refund", refund(100), target=TARGET)
    assert runtime.enforcer.decide_call(grant.token, proof, call).is_allowed
    replayed = runtime.enforcer.decide_call(grant.token, proof, call)
    assert replayed.code == "proof_replayed"
    # a replay may come from anyone who saw the request: it names no agent
    [event] = [e for e in _events(runtime) if e["id"] == replayed.event_id]
    assert event["actor"]["type"] == "system"


def test_a_drifted_agent_loses_confidential_tools_without_anyone_refreshing_the_engine(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}, {"tool": "kb/*"}])
    runtime.registry.present_manifest(SUPPORT, manifest(model_id="some-other-model"))
    verdict = agents.call(grant, "crm/issue_refund", refund(100))
    assert (verdict.code, verdict.policy_ids) == ("policy_forbid",
                                                  ("drifted-agent-sensitive-tools",))
    assert agents.call(grant, "kb/search_articles", {"query": "refund"}).is_allowed
    runtime.registry.review(SUPPORT, reviewer="erin@acme.example",
                            expected_digest=runtime.registry.get(SUPPORT).review_digest)
    # the review trusts the new manifest, not the grants issued under the old one
    stale = agents.call(grant, "crm/issue_refund", refund(100))
    assert (stale.outcome, stale.code) == (Outcome.DENY, "grant_manifest_changed")
    fresh = agents.grant(SUPPORT, [{"tool": "crm/*"}, {"tool": "kb/*"}])
    assert agents.call(fresh, "crm/issue_refund", refund(100)).is_allowed


def test_an_issuance_decides_on_the_agent_as_stored_now_not_as_the_engine_last_saw_it(
    runtime: Runtime, agents: Agents,
) -> None:
    # each change below is made in this process, and nothing reads the agent view in
    # between: issuing, exchanging and offering must each see it all the same
    crm = [{"tool": "crm/lookup_customer"}]  # confidential: not for a drifted agent
    held = agents.grant(CODER, crm, purpose="look up a customer")
    runtime.registry.present_manifest(SUPPORT, manifest(model_id="some-other-model"))

    def exchange() -> object:
        proof = make_proof(agents.keys[CODER], held.token, method=EXCHANGE_METHOD,
                           target=issuer_for(runtime.settings), now=runtime.clock.now())
        return runtime.grants.exchange(held.token, proof, to_agent=SUPPORT,
                                       scope=GrantScope.from_json({"tools": crm}),
                                       ttl_seconds=300)

    task = runtime.grants.start_task(SUPPORT, purpose="help", on_behalf_of="bob@acme.example")
    for attempt in (lambda: agents.grant(SUPPORT, crm), exchange,
                    lambda: runtime.grants.offer(task.id, GrantScope.from_json({"tools": crm}))):
        with pytest.raises(GrantError) as refused:
            attempt()
        assert refused.value.code == "issuance_denied"
    runtime.registry.review(SUPPORT, reviewer="erin@acme.example",
                            expected_digest=runtime.registry.get(SUPPORT).review_digest)
    assert agents.call(agents.grant(SUPPORT, crm), "crm/lookup_customer",
                       {"customer_id": "c-1"}).is_allowed
    assert isinstance(exchange(), IssuedGrant)


def test_a_suspended_agent_is_denied_at_once(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(CODER, [{"tool": "git/*"}], purpose="fix the build")
    runtime.registry.suspend(CODER, by="erin@acme.example", reason="odd behaviour")
    verdict = agents.call(grant, "git/git_log", {"repo_path": "/srv/repos/app"})
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "agent_not_active")


def test_after_reading_confidential_data_the_task_may_not_email_outside(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}, {"tool": "email/*"}])
    email = {"to": "someone@example.org", "subject": "hi", "body": "..."}
    before = agents.call(grant, "email/send_email", email)
    assert before.outcome is Outcome.APPROVAL_REQUIRED  # outside: a human may allow it
    assert agents.call(grant, "crm/lookup_customer", {"customer_id": "c-1"}).is_allowed
    assert runtime.grants.task(grant.claims.task_id).sensitivity_seen == 2
    after = agents.call(grant, "email/send_email", email)
    assert (after.code, after.policy_ids) == ("policy_forbid",
                                              ("no-external-email-after-confidential",))


def test_when_the_audit_log_is_down_every_call_is_denied(
    runtime: Runtime, agents: Agents,
) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    runtime.audit.close()
    verdict = agents.call(grant, "crm/issue_refund", refund(100))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "audit_unavailable")


def test_an_expired_grant_is_denied(runtime: Runtime, agents: Agents,
                                    frozen: FrozenClock) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    frozen.advance(seconds=360)
    verdict = agents.call(grant, "crm/issue_refund", refund(100))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_expired")
    # an invalid grant names no one: its subject is not trusted
    assert [e["actor"]["type"] for e in _events(runtime)
            if e["id"] == verdict.event_id] == [ActorType.SYSTEM.value]


def test_policy_sees_which_arguments_every_matching_scope_entry_constrains(
    agents: Agents,
) -> None:
    pinned = agents.grant(SUPPORT, [{"tool": "crm/issue_refund", "args": {
        "customer_id": {"in": ["c-1001"]}, "amount_cents": {"max": 5000}}}])
    verdict = agents.call(pinned, "crm/issue_refund", refund(2500))
    assert verdict.request is not None
    assert verdict.request.context["grant"] == {"constrained": ["amount_cents", "customer_id"]}
    # a second entry that allows the same call without pinning the customer unpins it
    loose = agents.grant(SUPPORT, [
        {"tool": "crm/issue_refund", "args": {"customer_id": {"in": ["c-1001"]}}},
        {"tool": "crm/*"}])
    verdict = agents.call(loose, "crm/issue_refund", refund(2500))
    assert verdict.request is not None
    assert verdict.request.context["grant"] == {"constrained": []}


def test_text_utf8_cannot_encode_is_a_deny_with_its_code_before_the_grant_is_used(
        runtime: Runtime, agents: Agents) -> None:
    # a lone surrogate ("\ud800" is valid JSON, and a str in Python): the decision used to
    # ask policy and then fail on the audit event's digest (`enforcement_error`)
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}], max_uses=1)
    for tool, args in (("crm/lookup_customer", {"customer_id": "c-\ud800"}),
                       ("crm/lookup_customer", {"\udfff": "c-1"}),
                       ("crm/lookup_customer", {"customer_id": ("c", ["\udc00"])}),
                       ("crm/\ud800", {})):
        verdict = runtime.enforcer.decide_call(grant.token, agents.proof(grant),
                                               ToolCall(tool, args, target=TARGET))
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "arguments_invalid"), verdict
        assert verdict.event_id is not None  # audited, the name escaped
    assert {e["action"] for e in _events(runtime) if e["outcome"] == "denied"} == {
        "tool:crm/lookup_customer", "tool:crm/\\ud800"}
    # the one use the grant allows is still there
    assert agents.call(grant, "crm/lookup_customer", {"customer_id": "c-1"}).is_allowed


def test_a_number_json_cannot_carry_is_a_deny_with_its_code_before_the_grant_is_used(
        runtime: Runtime, agents: Agents) -> None:
    # Python's JSON parsers (every transport's) read `NaN` and `1e999`: an argument no
    # policy reads was allowed and went on to the upstream, which the stdio direct path
    # (ebe6058) wrote as `NaN`/`Infinity`, tokens no JSON parser takes
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}], max_uses=1)
    for args in ({"customer_id": "c-1", "limit": float("inf")},
                 {"customer_id": "c-1", "extra": float("nan")},
                 {"customer_id": "c-1", "extra": {"deep": [1, -float("inf")]}}):
        verdict = runtime.enforcer.decide_call(grant.token, agents.proof(grant),
                                               ToolCall("crm/lookup_customer", args,
                                                        target=TARGET))
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "arguments_invalid"), verdict
        assert any("NaN or an infinity" in r for r in verdict.reasons), verdict
        assert verdict.event_id is not None
    # finite numbers are fine, and the one use the grant allows is still there
    assert agents.call(grant, "crm/lookup_customer",
                       {"customer_id": "c-1", "limit": 1e300}).is_allowed


def test_arguments_nested_past_the_cap_or_inside_themselves_are_a_deny_not_an_error(
        runtime: Runtime, agents: Agents) -> None:
    # every transport's parser caps nesting; a caller in this process does not: walking
    # such arguments raised RecursionError out of the decision (it must never raise)
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}], max_uses=1)
    itself: dict[str, object] = {"customer_id": "c-1"}
    itself["again"] = itself
    deep: object = "c-1"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    for args in (itself, {"customer_id": deep}, {"customer_id": [itself]}):
        verdict = runtime.enforcer.decide_call(grant.token, agents.proof(grant),
                                               ToolCall("crm/lookup_customer", args,
                                                        target=TARGET))
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "arguments_invalid"), verdict
        assert any("nest deeper than 64 levels" in r for r in verdict.reasons), verdict
        assert verdict.event_id is not None
    # at the cap is fine, and the one use the grant allows is still there
    at_cap: object = "c-1"
    for _ in range(MAX_DEPTH - 2):
        at_cap = [at_cap]
    verdict = agents.call(grant, "crm/lookup_customer", {"customer_id": "c-1", "x": at_cap})
    assert verdict.code != "arguments_invalid", verdict


def test_a_delegator_hands_on_no_more_than_policy_would_issue_it_now(
    runtime: Runtime, agents: Agents,
) -> None:
    # The coder holds crm/lookup_customer (confidential), issued while it was trusted;
    # then its manifest drifts, and the drifted-agent policy takes confidential tools
    # from it. Handing the tool on to the support agent is an issuance it could no
    # longer get itself: refused, as its own call is (found by review: the exchange
    # was decided for the receiver alone, which used the tool in the coder's task).
    crm = [{"tool": "crm/lookup_customer"}]
    held = agents.grant(CODER, crm, purpose="look up a customer")
    runtime.registry.present_manifest(CODER, manifest(model_id="some-other-model"))

    def exchange(parent: IssuedGrant) -> object:
        proof = make_proof(agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                           target=issuer_for(runtime.settings), now=runtime.clock.now())
        return runtime.grants.exchange(parent.token, proof, to_agent=SUPPORT,
                                       scope=GrantScope.from_json({"tools": crm}),
                                       ttl_seconds=300)

    # A drifted delegator hands on nothing at all (delegator_not_trusted, since the
    # line's agents re-gate a delegated grant's every use: what it handed on could not
    # be used), audited as the receiver's issuance refused
    with pytest.raises(GrantError) as refused:
        exchange(held)
    assert refused.value.code == "delegator_not_trusted"
    assert CODER in refused.value.message
    refusals = [e.event for e in search_events(runtime.store, EventFilter(action="grant:issue"))
                if e.event["outcome"] != "allowed"]
    assert [(e["actor"]["id"], e["detail"]["code"]) for e in refusals] == [
        (SUPPORT, "delegator_not_trusted")]
    # reviewed (its grant of before is of another manifest: a new one), it may again
    runtime.registry.review(CODER, reviewer="erin@acme.example",
                            expected_digest=runtime.registry.get(CODER).review_digest)
    child = exchange(agents.grant(CODER, crm, purpose="look up a customer"))
    assert isinstance(child, IssuedGrant)
    assert agents.call(child, "crm/lookup_customer", {"customer_id": "c-1"}).is_allowed


@pytest.mark.parametrize("tool", [123, None, ("crm", "issue_refund")])
def test_a_tool_id_that_is_not_a_string_is_a_deny_even_when_the_decision_fails(
    runtime: Runtime, agents: Agents, monkeypatch: pytest.MonkeyPatch, tool: Any,
) -> None:
    # a caller in this process passing a tool id that is no str: the refusal of a decision
    # that failed sliced it (`tool_id[:200]`) and the TypeError escaped decide_call
    from proctor.enforcement.steps import _Steps

    grant = agents.grant(SUPPORT, REFUND)

    def broken(self: object, grant: object, call: object) -> object:
        raise RuntimeError("the decision failed")

    monkeypatch.setattr(_Steps, "_decide", broken)
    verdict = runtime.enforcer.decide_call(grant.token, agents.proof(grant),
                                           ToolCall(tool, {}, target=TARGET))
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "enforcement_error")
    [event] = [e for e in _events(runtime) if e["id"] == verdict.event_id]
    assert event["action"] == f"tool:{str(tool)[:200]}"


def test_a_proof_made_for_a_listing_or_an_exchange_is_no_calls_proof_and_stays_unspent(
    runtime: Runtime, agents: Agents,
) -> None:
    # the caller names the call's method and target: an enforcement point (or a caller of
    # POST /v1/decide) naming the proof's own, a listing's or an exchange's, had it spent
    # as a call's, allowed
    grant = agents.grant(SUPPORT, REFUND)
    issuer = issuer_for(runtime.settings)
    listing = make_proof(agents.keys[SUPPORT], grant.token, method="tools/list", target=TARGET,
                         now=runtime.clock.now())
    exchange = make_proof(agents.keys[SUPPORT], grant.token, method=EXCHANGE_METHOD,
                          target=issuer, now=runtime.clock.now())
    for proof, method, target in ((listing, "tools/list", TARGET),
                                  (exchange, EXCHANGE_METHOD, issuer),
                                  (listing, "GET", TARGET)):
        verdict = runtime.enforcer.decide_call(grant.token, proof, ToolCall(
            "crm/issue_refund", refund(2500), method=method, target=target))
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "proof_wrong_target")
        [event] = [e for e in _events(runtime) if e["id"] == verdict.event_id]
        assert event["actor"]["type"] == ActorType.SYSTEM.value  # nobody proved the key
    # nothing was spent: the exchange takes its proof (and refuses a hand-on to its holder
    # only after the proof's check)
    with pytest.raises(GrantError) as refused:
        runtime.grants.exchange(grant.token, exchange, to_agent=SUPPORT,
                                scope=GrantScope.from_json({"tools": REFUND}), ttl_seconds=60)
    assert refused.value.code == "delegation_cycle"
