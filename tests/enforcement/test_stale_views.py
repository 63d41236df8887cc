"""What a node decides on while the news of another node's commit is on its way.

A node decides from views kept current by the change feed; the news of a commit made
elsewhere reaches it a moment later (PostgreSQL: the ``NOTIFY``; SQLite: the next look
at the feed). An allow decided on what the view still held must not stand: the
decision's write compares what policy read (the agent's trust state and risk, the
task's data sensitivity seen) with the committed rows and refuses it
(``agent_changed``, ``task_changed``, audited); the enforcer then decides the call once
more, on the rows as committed, and that is the answer.

The whole-node tests hold this node's news back for real: on PostgreSQL the feed's lock
(the listener delivers under it), on SQLite one look at the feed taken before the other
node commits (a decision looks once). The other node is a second runtime on the same
database, with its own engine, views and feed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select, update

from proctor.enforcement import CallVerdict, ToolCall
from proctor.errors import GrantError
from proctor.grants import GrantScope, HolderProof, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD, ISSUE_METHOD
from proctor.identity.agent import TrustState
from proctor.policy import Outcome
from proctor.policy.source import read_policy_dir
from proctor.runtime import Runtime, issuer_for
from proctor.store.tables import changes, policy_revisions, tasks
from tests.identity.factories import manifest

from .conftest import (
    APPROVER,
    CODER,
    OWNER,
    RISKY_GRANTS,
    SUPPORT,
    TARGET,
    Agents,
    rise_after_first_read,
)

LOOKUP = "crm/lookup_customer"  # confidential: forbidden to a drifted agent
ARGS = {"customer_id": "c-1"}
OUTSIDE = {"to": "someone@example.org", "subject": "hi", "body": "..."}
CONFIDENTIAL = 2


def read_confidential(node: Runtime, task_id: str) -> None:
    """What the write of an allowed confidential read commits on ``node`` for its task
    (:mod:`proctor.grants.use` raises the mark; nothing else does)."""
    with node.store.transaction() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id)
                     .values(sensitivity_seen=CONFIDENTIAL))


def heard_everything(runtime: Runtime) -> None:
    """Wait until ``runtime``'s feed has delivered every change committed so far."""
    feed = runtime.feed
    with runtime.store.reading() as conn:
        newest = int(conn.execute(select(func.max(changes.c.seq))).scalar() or 0)
    if feed.sees_every_commit:
        feed.catch_up()
        return
    heard = threading.Event()
    feed.subscribe(lambda _found: heard.set() if feed.last_seq >= newest else None,
                   heard.set)
    if feed.last_seq < newest:
        assert heard.wait(60), "the feed did not deliver what was committed"


@contextmanager
def news_held(runtime: Runtime) -> Iterator[None]:
    """Within the block, ``runtime`` hears nothing another node commits, as when the news
    is on its way; the agent is held in its view (as after its first call)."""
    heard_everything(runtime)
    assert runtime.agent_view.find(SUPPORT) is not None
    if runtime.feed.sees_every_commit:  # SQLite: the decision's one look is taken now
        with runtime.feed.one_look():
            assert runtime.feed.catch_up()
            yield
    else:
        with runtime.feed._lock:  # the listener delivers under it
            yield


def refused_at_write(runtime: Runtime) -> list[str]:
    """The codes of the allows refused by their writes for what another node changed
    (named by the event of the decision taken again, ``detail.decided_again``)."""
    found = []
    for (body,) in runtime.store.fetch("SELECT body FROM audit_events ORDER BY seq", []):
        text = body if isinstance(body, str) else json.dumps(body)
        found += [c for c in ("agent_changed", "task_changed", "policy_changed")
                  if f'"{c}"' in text]
    return found


def call_on(node: Runtime, agents: Agents, grant: IssuedGrant, tool: str,
            args: dict[str, Any]) -> CallVerdict:
    proof = make_proof(agents.keys[grant.claims.agent_id], grant.token, method="tools/call",
                       target=TARGET, now=node.clock.now())
    return node.enforcer.decide_call(grant.token, proof, ToolCall(tool, args, target=TARGET))


def approved(runtime: Runtime, agents: Agents, grant: IssuedGrant) -> None:
    """A human approved the email outside (the call asked again is then allowed, on a
    clean task)."""
    pending = agents.call(grant, "email/send_email", OUTSIDE)
    assert pending.outcome is Outcome.APPROVAL_REQUIRED and pending.approval is not None
    runtime.approvals.decide(pending.approval.id, approver=APPROVER, approve=True)


# the whole node


def test_a_drift_committed_on_another_node_before_this_one_heard_of_it_is_never_allowed(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    with news_held(runtime):
        drifted = other.registry.present_manifest(SUPPORT, manifest(model_id="other"))
        assert drifted.trust_state is TrustState.DRIFTED
        held = runtime.agent_view.find(SUPPORT)
        assert held is not None and held.trust_state is TrustState.TRUSTED  # the old state
        verdict = agents.call(grant, LOOKUP, ARGS)
    # the allow decided on the old state was refused by its write, then decided again
    assert refused_at_write(runtime) == ["agent_changed"]
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("drifted-agent-sensitive-tools",))


def _call_events(runtime: Runtime, tool: str) -> list[dict[str, Any]]:
    found = []
    for (body,) in runtime.store.fetch("SELECT body FROM audit_events ORDER BY seq", []):
        event = json.loads(body) if isinstance(body, str) else body
        if event["action"] == f"tool:{tool}":
            found.append(event)
    return found


def test_a_call_decided_once_more_leaves_one_event_that_says_why(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """The first decision's write refused it and wrote nothing (it was never the answer);
    the event of the decision that answered says it was decided again, and why."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    before = len(_call_events(runtime, LOOKUP))
    with news_held(runtime):
        other.registry.present_manifest(SUPPORT, manifest(model_id="other"))
        verdict = agents.call(grant, LOOKUP, ARGS)
    [event] = _call_events(runtime, LOOKUP)[before:]
    assert (event["id"], event["outcome"]) == (verdict.event_id, "denied")
    assert event["detail"]["decided_again"]["code"] == "agent_changed"
    assert "drifted" in event["detail"]["decided_again"]["reason"]


def test_a_risk_score_committed_on_another_node_before_this_one_heard_of_it_is_never_allowed(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    with news_held(runtime):
        other.registry.set_risk_score(SUPPORT, 90, ["rate"])  # high-risk-agent forbids
        held = runtime.agent_view.find(SUPPORT)
        assert held is not None and held.risk_score < 80  # the old score
        verdict = agents.call(grant, LOOKUP, ARGS)
    assert refused_at_write(runtime) == ["agent_changed"]
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("high-risk-agent", "risky-agent-needs-approval"))


def test_a_sensitive_read_committed_on_another_node_before_this_one_heard_of_it_is_never_allowed(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}, {"tool": "email/*"}])
    task_id = grant.claims.task_id
    approved(runtime, agents, grant)  # the email outside, while the task is clean
    with news_held(runtime):
        # the task reads confidential data through the other node
        read_confidential(other, task_id)
        assert runtime.task_view.task(task_id).sensitivity_seen == 0  # what this node holds
        verdict = agents.call(grant, "email/send_email", OUTSIDE)
    assert refused_at_write(runtime) == ["task_changed"]
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("no-external-email-after-confidential",))


def test_a_confidential_call_decided_on_another_node_marks_the_task_for_this_one(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """The same through the other node's own decision (its write raises the mark): the
    approved email decided here on the clean task is refused (``task_changed``, or
    ``agent_changed`` when that call also moved the agent's score), then decided again."""
    grant = agents.grant(SUPPORT, [{"tool": "crm/*"}, {"tool": "email/*"}])
    approved(runtime, agents, grant)
    with news_held(runtime):
        assert call_on(other, agents, grant, LOOKUP, ARGS).is_allowed
        verdict = agents.call(grant, "email/send_email", OUTSIDE)
    assert refused_at_write(runtime)[-1:] in (["task_changed"], ["agent_changed"])
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("no-external-email-after-confidential",))


def test_a_policy_revision_activated_on_another_node_is_never_allowed_around(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """This node loads another's activation every ``sync_seconds``; an allow decided on
    the revision it still runs is refused by its write (``policy_changed``) and decided
    once more on the revision now active."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    before = runtime.engine.active
    sources = {**read_policy_dir(runtime.settings.policy_dir), "incident.cedar": (
        '@id("incident-no-lookups")\n@reason("no customer lookups during the incident")\n'
        'forbid (principal, action == Action::"tool:crm/lookup_customer", resource);\n')}
    revision = other.policies.add_candidate(sources, origin="the incident")
    other.policies.activate(revision)
    assert runtime.engine.active is before  # this node still runs the previous revision
    verdict = agents.call(grant, LOOKUP, ARGS)
    assert refused_at_write(runtime) == ["policy_changed"]
    assert (verdict.outcome, verdict.code, verdict.policy_ids) == (
        Outcome.DENY, "policy_forbid", ("incident-no-lookups",))
    assert verdict.revision == revision


class Asking:
    """A grant of ``LOOKUP`` for SUPPORT, issued for its task or exchanged from CODER's."""

    def __init__(self, runtime: Runtime, agents: Agents, how: str) -> None:
        self.runtime, self.agents, self.how = runtime, agents, how
        self.held = agents.grant(CODER, [{"tool": LOOKUP}], purpose="look up a customer")
        self.task = runtime.grants.start_task(SUPPORT, purpose="help a customer",
                                              on_behalf_of=OWNER)

    def __call__(self) -> object:
        runtime, scope = self.runtime, GrantScope.from_json({"tools": [{"tool": LOOKUP}]})
        if self.how == "issue":
            return runtime.grants.issue(self.task.id, scope)
        proof = make_proof(self.agents.keys[CODER], self.held.token, method=EXCHANGE_METHOD,
                           target=issuer_for(runtime.settings), now=runtime.clock.now())
        return runtime.grants.exchange(self.held.token, proof, to_agent=SUPPORT, scope=scope,
                                       ttl_seconds=300)

    def trees(self) -> tuple[object, object]:
        grants = self.runtime.grants
        return grants.tree(self.task.id), grants.tree(self.held.claims.task_id)


@pytest.mark.parametrize("how", ["issue", "exchange"])
def test_an_issuance_on_a_risk_committed_on_another_node_before_this_one_heard_of_it_is_refused(
        runtime: Runtime, other: Runtime, agents: Agents, how: str) -> None:
    """A ``grant:issue`` policy on ``principal.risk_score``: the grant's write confirms
    the risk the issuance was decided on (``agent_changed``, nothing stored), as a call's
    does; the issuance is then decided once more on the score as committed, while this
    node has still not heard of it."""
    sources = {**read_policy_dir(runtime.settings.policy_dir), "risky.cedar": RISKY_GRANTS}
    runtime.policies.activate(runtime.policies.add_candidate(sources, origin="risky grants"))
    ask = Asking(runtime, agents, how)
    assert isinstance(ask(), IssuedGrant)  # at the agent's score now (50 or less)
    trees = ask.trees()
    with news_held(runtime):
        other.registry.set_risk_score(SUPPORT, 70)  # committed before the grant's write
        seen = runtime.agent_view.find(SUPPORT)
        assert seen is not None and seen.risk_score <= 50  # the old score
        with pytest.raises(GrantError) as refused:
            ask()
    assert refused.value.code == "issuance_denied"  # decided again, on 70
    assert ask.trees() == trees  # nothing stored


@pytest.mark.parametrize("how", ["issue", "exchange"])
def test_an_issuance_refused_for_an_agent_changed_on_another_node_is_decided_once_more(
        runtime: Runtime, other: Runtime, agents: Agents, how: str) -> None:
    """The refusal drops the agent's stale entry from this node's view, and the issuance
    is decided again on the agent as committed (still before this node heard the news:
    on PostgreSQL the feed is held): a rise that policy allows is issued, not refused
    ``agent_changed`` until the feed delivers."""
    sources = {**read_policy_dir(runtime.settings.policy_dir), "risky.cedar": RISKY_GRANTS}
    runtime.policies.activate(runtime.policies.add_candidate(sources, origin="risky grants"))
    ask = Asking(runtime, agents, how)
    assert isinstance(ask(), IssuedGrant)
    with news_held(runtime):
        score = runtime.registry.get(SUPPORT).risk_score
        assert score < 50
        other.registry.set_risk_score(SUPPORT, score + 1)  # riskier, yet allowed
        seen = runtime.agent_view.find(SUPPORT)
        assert seen is not None and seen.risk_score == score  # the old score
        issued = ask()
        assert isinstance(issued, IssuedGrant)
        grant = runtime.grants.inspect(issued.token)
        assert grant.claims.agent_id == SUPPORT


@pytest.mark.parametrize("allowed", [False, True])
def test_an_exchange_confirms_the_delegator_as_its_tools_were_decided_for_it(
        runtime: Runtime, other: Runtime, agents: Agents, allowed: bool) -> None:
    """An exchange's tools are decided for the delegator too, on its row as stored; a
    risk committed elsewhere after that read and before the child's write refuses the
    write (``agent_changed``: nothing stored, none of its events written), and the
    exchange is decided once more on the score as committed: refused over 50, else
    issued, the delegator's one event naming the refusal."""
    sources = {**read_policy_dir(runtime.settings.policy_dir), "risky.cedar": RISKY_GRANTS}
    runtime.policies.activate(runtime.policies.add_candidate(sources, origin="risky grants"))
    ask = Asking(runtime, agents, "exchange")
    score = runtime.registry.get(CODER).risk_score
    assert score < 50
    risen = score + 1 if allowed else 70
    # committed after the delegator was read, before the child's write
    read = rise_after_first_read(runtime, other, CODER, risen)
    before = len(_issue_events(runtime, CODER))
    with news_held(runtime):
        _answered(ask, allowed)
    assert read == [score, risen]  # decided once more, on the score as committed
    [event] = _issue_events(runtime, CODER)[before:]
    assert event["outcome"] == ("allowed" if allowed else "denied")
    assert event["detail"]["decided_again"]["code"] == "agent_changed"


def _answered(ask: Asking, allowed: bool) -> str | None:
    """``ask()``, issued if ``allowed``, else refused ``issuance_denied`` with nothing
    stored: the refusal's message."""
    trees = ask.trees()
    if allowed:
        assert isinstance(ask(), IssuedGrant)
        return None
    with pytest.raises(GrantError) as refused:
        ask()
    assert refused.value.code == "issuance_denied"
    assert ask.trees() == trees  # nothing stored
    return refused.value.message


def _incident(runtime: Runtime, policy: str) -> dict[str, str]:
    return {**read_policy_dir(runtime.settings.policy_dir), "incident.cedar": policy}


NO_LOOKUP_GRANTS = ('@id("incident-no-lookup-grants")\n@reason("no lookup grants now")\n'
                    'forbid (principal, action == Action::"grant:issue", '
                    'resource == Tool::"crm/lookup_customer");\n')
UNRELATED = ('@id("incident-unrelated")\n@reason("nothing to do with lookups")\n'
             'forbid (principal, action == Action::"grant:issue", '
             'resource == Tool::"email/send_email");\n')


@pytest.mark.parametrize("how", ["issue", "exchange"])
@pytest.mark.parametrize(("policy", "allowed"), [(NO_LOOKUP_GRANTS, False), (UNRELATED, True)])
def test_an_issuance_decided_on_a_policy_revision_another_node_replaced_is_decided_again(
        runtime: Runtime, other: Runtime, agents: Agents, how: str, policy: str,
        allowed: bool) -> None:
    """This node loads another's activation every ``sync_seconds``; a grant decided on
    the revision it still runs is refused by its write (``policy_changed``, nothing
    stored), this node loads the active revision and decides it once more on it."""
    ask = Asking(runtime, agents, how)
    before = runtime.engine.active
    revision = other.policies.add_candidate(_incident(runtime, policy), origin="the incident")
    other.policies.activate(revision)
    assert runtime.engine.active is before  # this node still runs the previous revision
    written = len(_issue_events(runtime))
    refused = _answered(ask, allowed)
    # an exchange's receiver refused by policy is told as one no agent has (the
    # reasons are in its decision's event, below)
    assert allowed or (refused is not None and ("no lookup grants now" if how == "issue"
                                                else "handing the grant on") in refused)
    active = runtime.engine.active
    assert active is not None and active.revision == revision  # loaded on the refusal
    # one event: the decision that answered, which names the refused write of the first
    # (its event withdrawn: it stood, allowed, for a grant never stored)
    [event] = _issue_events(runtime)[written:]
    assert event["outcome"] == ("allowed" if allowed else "denied")
    assert event["detail"]["decided_again"]["code"] == "policy_changed"
    assert allowed or "no lookup grants now" in " ".join(event["decision"]["reasons"])


def _issue_events(runtime: Runtime, agent: str = SUPPORT) -> list[dict[str, Any]]:
    """``agent``'s ``grant:issue`` events, in the chain's order."""
    found = []
    for (body,) in runtime.store.fetch("SELECT body FROM audit_events ORDER BY seq", []):
        event = json.loads(body) if isinstance(body, str) else body
        if event["action"] == "grant:issue" and event["actor"]["id"] == agent:
            found.append(event)
    return found


def test_an_issuance_of_many_tools_decided_again_leaves_the_events_of_the_second_decision(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """Each tool's event of the first decision goes with the grant's write, and none
    stands when that write is refused and the issuance decided once more."""
    task = runtime.grants.start_task(SUPPORT, purpose="help a customer", on_behalf_of=OWNER)
    tools = [LOOKUP, "kb/search_articles", "crm/issue_refund"]
    scope = GrantScope.from_json({"tools": [{"tool": tool} for tool in tools]})
    revision = other.policies.add_candidate(_incident(runtime, UNRELATED), origin="unrelated")
    other.policies.activate(revision)
    before = len(_issue_events(runtime))
    issued = runtime.grants.issue(task.id, scope)
    events = _issue_events(runtime)[before:]
    assert sorted(e["target"] for e in events) == sorted(f'Tool::"{t}"' for t in tools)
    assert {(e["outcome"], e["detail"]["decided_again"]["code"]) for e in events} == {
        ("allowed", "policy_changed")}
    assert runtime.grants.inspect(issued.token).claims.grant_id == issued.grant_id


def test_an_issuance_its_write_refuses_for_good_leaves_its_refusal_not_its_allows(
        runtime: Runtime, agents: Agents) -> None:
    """An exchange asking for more uses than its parent has left is refused by its write
    (``delegation_widens_uses``), nothing stored: its decisions' events, allowed, are
    not written, the refusal's is."""
    parent = agents.grant(CODER, [{"tool": LOOKUP}, {"tool": "kb/search_articles"}],
                          purpose="look up a customer", max_uses=1)
    scope = GrantScope.from_json({"tools": [{"tool": LOOKUP}, {"tool": "kb/search_articles"}]})
    proof = make_proof(agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                       target=issuer_for(runtime.settings), now=runtime.clock.now())
    before = len(_issue_events(runtime))
    with pytest.raises(GrantError) as refused:
        runtime.grants.exchange(parent.token, proof, to_agent=SUPPORT, scope=scope,
                                ttl_seconds=300, max_uses=5)
    assert refused.value.code == "delegation_widens_uses"
    [event] = _issue_events(runtime)[before:]
    assert (event["outcome"], event["detail"]["code"]) == ("denied", "delegation_widens_uses")
    assert event["task"] == parent.claims.task_id
    assert [n.kind for n in runtime.grants.tree(parent.claims.task_id)] == ["task", "grant"]


@pytest.mark.parametrize("how", ["offer", "redeem"])
def test_an_offer_or_its_redemption_decided_on_a_replaced_policy_revision_is_decided_again(
        runtime: Runtime, other: Runtime, agents: Agents, how: str) -> None:
    """An offer's write and its redemption's confirm the policy revision they were
    decided on, as a grant's does: decided once more on the revision now active, and
    only that decision's events are written."""
    task = runtime.grants.start_task(SUPPORT, purpose="help a customer", on_behalf_of=OWNER)
    scope = GrantScope.from_json({"tools": [{"tool": LOOKUP}]})
    offer = runtime.grants.offer(task.id, scope) if how == "redeem" else None
    revision = other.policies.add_candidate(_incident(runtime, NO_LOOKUP_GRANTS),
                                            origin="the incident")
    other.policies.activate(revision)
    before = len(_issue_events(runtime))
    with pytest.raises(GrantError) as refused:
        if offer is None:
            runtime.grants.offer(task.id, scope)
        else:
            proof = make_proof(agents.keys[SUPPORT], None, method=ISSUE_METHOD,
                               target=issuer_for(runtime.settings), now=runtime.clock.now())
            runtime.grants.redeem(offer.id, HolderProof(proof))
    assert refused.value.code == "issuance_denied"
    assert runtime.grants.tree(task.id) == runtime.grants.tree(task.id)[:1]  # the task alone
    active = runtime.engine.active
    assert active is not None and active.revision == revision
    # the first decision's event went with the offer's write (or the grant's, which
    # took the offer): withdrawn with it; the decision taken again names the refusal
    [second] = _issue_events(runtime)[before:]
    assert (second["outcome"], second["detail"]["decided_again"]["code"]) == (
        "denied", "policy_changed")
    if offer is not None:
        assert runtime.grants.offer_of(offer.id).redeemed_at is None


def test_a_redemption_its_write_refuses_for_good_leaves_its_refusal_and_the_offer_open(
        runtime: Runtime, agents: Agents) -> None:
    """A redemption's decisions go with the grant's write, which takes the offer: a
    holder proof used before is refused there (``proof_replayed``), and its allow is not
    written, its refusal is, and the offer is not taken."""
    task = runtime.grants.start_task(SUPPORT, purpose="help a customer", on_behalf_of=OWNER)
    scope = GrantScope.from_json({"tools": [{"tool": LOOKUP}]})
    first, second = (runtime.grants.offer(task.id, scope) for _ in range(2))

    def proof() -> HolderProof:
        return HolderProof(make_proof(agents.keys[SUPPORT], None, method=ISSUE_METHOD,
                                      target=issuer_for(runtime.settings),
                                      now=runtime.clock.now()))

    used = proof()
    runtime.grants.redeem(first.id, used)
    before = len(_issue_events(runtime))
    with pytest.raises(GrantError) as refused:
        runtime.grants.redeem(second.id, used)
    assert refused.value.code == "proof_replayed"
    [event] = _issue_events(runtime)[before:]
    assert (event["outcome"], event["detail"]["code"]) == ("denied", "proof_replayed")
    assert runtime.grants.offer_of(second.id).redeemed_at is None
    redeemed = runtime.grants.redeem(second.id, proof())
    assert runtime.grants.offer_of(second.id).grant_id == redeemed.grant_id
    [allowed] = _issue_events(runtime)[before + 1:]
    assert allowed["outcome"] == "allowed"


def _revoke(node: Runtime, grant: IssuedGrant) -> None:
    node.grants.revoke(grant.claims.grant_id, "revoked on the other node")


def _end(node: Runtime, grant: IssuedGrant) -> None:
    node.grants.end_task(grant.claims.task_id, reason="ended on the other node")


def _suspend(node: Runtime, grant: IssuedGrant) -> None:
    node.registry.suspend(SUPPORT, by=APPROVER, reason="suspended on the other node")


@pytest.mark.parametrize(("change", "codes"), [
    (_revoke, {"grant_revoked"}),
    (_end, {"grant_revoked", "task_ended"}),  # the task's node is revoked with it
    (_suspend, {"agent_not_active"}),
])
def test_what_else_an_allow_depends_on_is_confirmed_by_the_write(
        runtime: Runtime, other: Runtime, agents: Agents, change: Any, codes: set[str]) -> None:
    """The same class: a revocation, a task's end, a suspension committed elsewhere while
    this node's views still hold the grant, the task and the agent as they were."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    with news_held(runtime):
        assert runtime.revocations.revoked_among(grant.claims.lineage) == []  # held live
        change(other, grant)
        verdict = agents.call(grant, LOOKUP, ARGS)
        assert runtime.revocations.revoked_among(grant.claims.lineage) == []  # not heard
    assert verdict.outcome is Outcome.DENY and verdict.code in codes


def test_with_nothing_committed_elsewhere_the_held_views_allow(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """The control: holding the news back denies nothing by itself."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    assert agents.call(grant, LOOKUP, ARGS).is_allowed
    with news_held(runtime):
        other.registry.find(SUPPORT)  # the other node reads, changes nothing
        assert agents.call(grant, LOOKUP, ARGS).is_allowed
    assert refused_at_write(runtime) == []


def test_what_this_node_changed_itself_is_never_news_to_it(
        runtime: Runtime, agents: Agents) -> None:
    """Its own changes drop its copies at once (the feed's news of them may be on its
    way): the risk scores its audit writer publishes as the agent warms up, a drift its
    registry records. No call is refused ``agent_changed`` for what this node did."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    with news_held(runtime):
        scores = set()
        for _ in range(6):  # the first calls move the score (the agent's warm-up)
            assert agents.call(grant, LOOKUP, ARGS).is_allowed
            scores.add(runtime.registry.get(SUPPORT).risk_score)
        assert len(scores) > 1
        runtime.registry.present_manifest(SUPPORT, manifest(model_id="other"))
        verdict = agents.call(grant, LOOKUP, ARGS)
    assert (verdict.code, verdict.policy_ids) == (
        "policy_forbid", ("drifted-agent-sensitive-tools",))
    assert refused_at_write(runtime) == []  # nothing was decided twice


# the decision's write alone


def _prepared(runtime: Runtime, agents: Agents, grant: IssuedGrant, tool: str,
              args: dict[str, Any]) -> Any:
    return runtime.grants.prepare(grant.token, agents.proof(grant), method="tools/call",
                                  target=TARGET, tool_id=tool, args=args)


def test_the_write_confirms_the_risk_an_allow_was_decided_on(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    agent = runtime.registry.get(SUPPORT)
    use = _prepared(runtime, agents, grant, LOOKUP, ARGS)
    use.decided_state = agent.trust_state.value
    use.decided_risk = (agent.risk_score, agent.risk_factors)  # what the decision saw
    runtime.registry.set_risk_score(SUPPORT, agent.risk_score, ["new_tool"])  # committed first
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "agent_changed"
    assert use.uses_left is None  # nothing counted
    fresh = runtime.registry.get(SUPPORT)
    again = _prepared(runtime, agents, grant, LOOKUP, ARGS)
    again.decided_state = fresh.trust_state.value
    again.decided_risk = (fresh.risk_score, fresh.risk_factors)
    runtime.grants.apply_alone(again)
    assert again.refusal is None  # decided on the committed risk: it stands
    lower = _prepared(runtime, agents, grant, LOOKUP, ARGS)
    lower.decided_risk = (fresh.risk_score + 5, (*fresh.risk_factors, "rate"))
    runtime.grants.apply_alone(lower)
    assert lower.refusal is None  # the risk fell since: policy allows no more on it


def test_the_write_confirms_the_sensitivity_an_allow_was_decided_on(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "email/*"}], max_uses=2)
    task_id = grant.claims.task_id
    use = _prepared(runtime, agents, grant, "email/send_email", OUTSIDE)
    use.decided_seen = 0  # the task was clean when the call was decided
    read_confidential(runtime, task_id)  # committed first
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "task_changed"
    assert use.uses_left is None  # nothing counted
    again = _prepared(runtime, agents, grant, "email/send_email", OUTSIDE)
    again.decided_seen = CONFIDENTIAL  # decided on the task as it is
    runtime.grants.apply_alone(again)
    assert again.refusal is None and again.uses_left == 1


def test_the_write_refuses_an_allow_when_no_policy_revision_is_active_any_more(
        runtime: Runtime, agents: Agents) -> None:
    """Fail closed: no revision active at the write is not the revision the allow was
    decided on either (the check let such an allow through)."""
    grant = agents.grant(SUPPORT, [{"tool": LOOKUP}])
    use = _prepared(runtime, agents, grant, LOOKUP, ARGS)
    active = runtime.engine.active
    assert active is not None and active.revision is not None
    use.decided_revision = active.revision
    with runtime.store.transaction() as conn:  # as if every revision were retired
        conn.execute(update(policy_revisions).where(policy_revisions.c.status == "active")
                     .values(status="candidate"))
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "policy_changed"
    assert use.uses_left is None  # nothing counted
