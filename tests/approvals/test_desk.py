"""The approver's desk: separation of duties comes from the deployment's policies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proctor.approvals import ApprovalDesk, ApprovalStatus, SimilarTerms
from proctor.errors import ApprovalError, IdentityError
from proctor.grants import GrantScope
from proctor.runtime import Runtime
from tests.enforcement.conftest import APPROVER, OWNER, SUPPORT, Agents, refund

REFUND = [{"tool": "crm/issue_refund"}]


def desk(runtime: Runtime) -> ApprovalDesk:
    return ApprovalDesk(runtime.store, runtime.clock, runtime.approvals, runtime.grants,
                        runtime.engine)


def let_owners_approve_large_refunds(runtime: Runtime) -> None:
    path = runtime.settings.policy_dir / "support.cedar"
    text = path.read_text()
    marked = '@approval("refunds over 50.00 need a human\'s approval")\n'
    assert marked in text
    path.write_text(text.replace(marked, marked + '@owner_may_approve("true")\n'))
    runtime.policies.load_directory(runtime.settings.policy_dir)


def test_by_default_the_owner_may_deny_but_not_approve(runtime: Runtime,
                                                         agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    first = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    second = agents.call(grant, "crm/issue_refund", refund(30_000)).approval
    assert first is not None and second is not None
    assert not desk(runtime).may_decide(first, OWNER)
    with pytest.raises(ApprovalError) as own:
        desk(runtime).decide(first.id, approver=OWNER, approve=True)
    assert own.value.code == "approval_own_request"
    with pytest.raises(ApprovalError):
        desk(runtime).decide(first.id, approver=OWNER, approve=True, similar=SimilarTerms())
    assert runtime.approvals.get(first.id).status is ApprovalStatus.PENDING
    denied = desk(runtime).decide(second.id, approver=OWNER, approve=False, comment="no")
    assert denied.approval.status is ApprovalStatus.DENIED


def test_a_policy_may_let_the_owner_approve(runtime: Runtime, agents: Agents) -> None:
    let_owners_approve_large_refunds(runtime)
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    assert desk(runtime).may_decide(pending, OWNER)
    decided = desk(runtime).decide(pending.id, approver=OWNER, approve=True)
    assert decided.approval.status is ApprovalStatus.APPROVED
    assert decided.approval.decided_by == OWNER


def test_a_policy_removed_since_the_request_counts_as_no(runtime: Runtime,
                                                           agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    forged = pending.request | {"policy_ids": ["no-such-policy"]}
    assert desk(runtime).owner_may_approve(pending) is False  # the default
    let_owners_approve_large_refunds(runtime)
    assert desk(runtime).owner_may_approve(pending) is True
    assert desk(runtime).owner_may_approve(replace(pending, request=forged)) is False


def test_similar_terms_issue_a_pre_approval_grant(runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    decided = desk(runtime).decide(pending.id, approver=APPROVER, approve=True,
                                   similar=SimilarTerms(ttl_seconds=300, max_uses=3))
    assert decided.similar is not None
    shown = decided.as_json()
    assert shown["similar_grant"]["max_uses"] == 3
    assert shown["approval"]["status"] == "approved"
    assert agents.call(grant, "crm/issue_refund", refund(1_000 + 5_000)).is_allowed


# The owner's own id in other letter cases, in full-width letters and in mathematical
# bold letters: NFKC and case folding make each of them `bob@acme.example`.
OWNER_SPELLINGS = ("Bob@ACME.example", "BOB@acme.example",
                   "\uff42\uff4f\uff42@acme.example",
                   "\U0001d41b\U0001d428\U0001d41b@acme.example")


def test_the_owner_spelt_another_way_may_not_approve_its_agents_call(
        runtime: Runtime, agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    for spelling in OWNER_SPELLINGS:
        for similar in (None, SimilarTerms()):
            with pytest.raises(ApprovalError) as own:
                desk(runtime).decide(pending.id, approver=spelling, approve=True,
                                     similar=similar)
            assert own.value.code == "approval_own_request", spelling
        assert not desk(runtime).may_decide(pending, spelling)
    assert runtime.approvals.get(pending.id).status is ApprovalStatus.PENDING
    assert desk(runtime).similar.for_task(grant.claims.task_id) == []


def test_an_approver_id_with_invisible_characters_is_refused(runtime: Runtime,
                                                             agents: Agents) -> None:
    grant = agents.grant(SUPPORT, REFUND)
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None
    for hidden in ("bob\u200b@acme.example", "bob@acme.example\u200d",
                   "\u202ebob@acme.example", "b\u043eb@acme.example"):  # Cyrillic o
        with pytest.raises(IdentityError) as refused:
            desk(runtime).decide(pending.id, approver=hidden, approve=True)
        assert "bob" not in refused.value.message  # named by code point, never echoed
    assert runtime.approvals.get(pending.id).status is ApprovalStatus.PENDING


def test_the_owner_and_the_approver_are_kept_in_canonical_form(runtime: Runtime,
                                                               agents: Agents) -> None:
    task = runtime.grants.start_task(SUPPORT, purpose="refund", on_behalf_of="Bob@Acme.Example")
    assert task.on_behalf_of == OWNER
    grant = runtime.grants.issue(task.id, GrantScope.from_json({"tools": REFUND}))
    pending = agents.call(grant, "crm/issue_refund", refund(25_000)).approval
    assert pending is not None and pending.on_behalf_of == OWNER
    with pytest.raises(ApprovalError) as own:
        desk(runtime).decide(pending.id, approver=OWNER, approve=True)
    assert own.value.code == "approval_own_request"
    decided = desk(runtime).decide(pending.id, approver=" Erin@ACME.example ", approve=True)
    assert decided.approval.decided_by == APPROVER


def test_the_owner_of_a_delegated_agent_may_not_approve_its_call(runtime: Runtime,
                                                                 agents: Agents) -> None:
    # Carol's helper agent receives refunds from Bob's coder, in Bob's task: its large
    # refund waits for a human. Only Bob (the task's human) was kept from approving it:
    # Carol, an approver, approved her own agent's call, and approved similar ones
    # (found by review). The owner of the agent whose call it is is the owner too.
    from cryptography.hazmat.primitives.asymmetric import ec
    from joserfc.jwk import ECKey

    from proctor.identity import OwnKeyProof
    from tests.approvals.test_similar import delegated_refunds
    from tests.identity.factories import manifest, public_jwk

    helper, carol = "spiffe://acme.example/agent/helper", "Carol@Acme.example"
    key = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(helper, owner=carol, groups=["support-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
    runtime.enforcer.refresh_principals()
    assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
    agents.keys[helper] = key.private_key
    _, child = delegated_refunds(runtime, agents, helper)
    request = agents.call(child, "crm/issue_refund", refund(25_000)).approval
    assert request is not None and request.on_behalf_of == OWNER
    for who in ("carol@acme.example", OWNER):
        assert not desk(runtime).may_decide(request, who)
        for terms in (None, SimilarTerms()):
            with pytest.raises(ApprovalError) as own:
                desk(runtime).decide(request.id, approver=who, approve=True, similar=terms)
            assert own.value.code == "approval_own_request", who
    assert runtime.approvals.get(request.id).status is ApprovalStatus.PENDING
    assert desk(runtime).decide(request.id, approver="carol@acme.example", approve=False
                                ).approval.status is ApprovalStatus.DENIED


def test_the_owner_of_an_agent_that_delegated_the_grant_may_not_approve_its_call(
        runtime: Runtime, agents: Agents) -> None:
    # Bob's coder hands refunds on to Dan's triage agent, which hands them on to Carol's
    # helper. Dan chose the delegate and vouched for it; Dan, an approver, approved the
    # helper's large refund (separation of duties looked at Bob and Carol only; found by
    # review). The owners of the line's agents are owners of the request too.
    from cryptography.hazmat.primitives.asymmetric import ec
    from joserfc.jwk import ECKey

    from proctor.grants import IssuedGrant, make_proof
    from proctor.grants.authority import EXCHANGE_METHOD
    from proctor.identity import OwnKeyProof
    from proctor.runtime import issuer_for
    from tests.approvals.test_similar import REFUND, delegated_refunds
    from tests.identity.factories import manifest, public_jwk

    triage, helper = "spiffe://acme.example/agent/triage", "spiffe://acme.example/agent/helper"
    for agent_id, owner in ((triage, "dan@acme.example"), (helper, "carol@acme.example")):
        key = ECKey.generate_key("P-256", private=True)
        runtime.registry.register(agent_id, owner=owner, groups=["support-agents"],
                                  proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
        assert isinstance(key.private_key, ec.EllipticCurvePrivateKey)
        agents.keys[agent_id] = key.private_key
    runtime.enforcer.refresh_principals()
    _, middle = delegated_refunds(runtime, agents, triage)
    proof = make_proof(agents.keys[triage], middle.token, method=EXCHANGE_METHOD,
                       target=issuer_for(runtime.settings), now=runtime.clock.now())
    child = runtime.grants.exchange(middle.token, proof, to_agent=helper, ttl_seconds=300,
                                    scope=GrantScope.from_json({"tools": REFUND}))
    assert isinstance(child, IssuedGrant)
    request = agents.call(child, "crm/issue_refund", refund(25_000)).approval
    assert request is not None and request.on_behalf_of == OWNER
    for who in ("Dan@acme.example", "carol@acme.example", OWNER):
        assert not desk(runtime).may_decide(request, who), who
        for terms in (None, SimilarTerms()):
            with pytest.raises(ApprovalError) as own:
                desk(runtime).decide(request.id, approver=who, approve=True, similar=terms)
            assert own.value.code == "approval_own_request", who
    assert desk(runtime).may_decide(request, APPROVER)
    assert runtime.approvals.get(request.id).status is ApprovalStatus.PENDING
