"""The agent-side SDK against a live server: grants bound to the agent's key, a fresh
proof per call, bounded approval waits that name the approval, a revoked grant dropped at
once, and a clear refusal when the server is down or the clock is off."""

from __future__ import annotations

import re
from datetime import timedelta

import anyio
import pytest
from examples.frameworks.operator import OWNER

from proctor.audit import EventFilter, search_events
from proctor.client import (
    AgentKey,
    ApprovalDeniedError,
    ApprovalTimeoutError,
    AsyncProctorClient,
    CallRefusedError,
    ClientError,
    Guard,
    ProctorClient,
    Verdict,
    guarded,
)
from proctor.clock import FrozenClock, SystemClock

from .conftest import Live

pytestmark = pytest.mark.anyio

REFUND = [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}}]
SMALL = {"customer_id": "c-1001", "amount_cents": 2500}
LARGE = {"customer_id": "c-1001", "amount_cents": 25000}


def _client(live: Live, **options: object) -> ProctorClient:
    agent_id, key = live.operator.register_agent("support")
    return ProctorClient(live.base, agent_id, key, **options)  # type: ignore[arg-type]


async def test_the_async_client_gets_allow_deny_and_approval_answers(live: Live) -> None:
    agent_id, key = live.operator.register_agent("support")
    held: list[Verdict] = []

    async def page_a_human(verdict: Verdict) -> None:
        held.append(verdict)
        assert verdict.approval is not None
        await anyio.to_thread.run_sync(live.operator.approve, verdict.approval.id)

    async with AsyncProctorClient(live.base, agent_id, key, on_approval=page_a_human,
                                  approval_timeout_seconds=30) as client:
        task = await client.start_task("refund a lost parcel", on_behalf_of=OWNER)
        grant = await client.issue_grant(task, REFUND)
        allowed = await client.authorize(grant, "crm/issue_refund", SMALL)
        assert (allowed.code, allowed.policy_ids) == ("allow", ("support-small-refund",))
        denied = await client.decide(grant, "email/send_email", {"to": "a@example.org"})
        assert (denied.decision, denied.code) == ("deny", "grant_out_of_scope")
        approved = await client.authorize(grant, "crm/issue_refund", LARGE)
        assert approved.is_allowed
        assert [v.code for v in held] == ["approval_required"]
        assert live.operator.approved == [held[0].approval.id]  # type: ignore[union-attr]
        assert await client.end_task(task)


def test_an_approval_that_never_comes_ends_the_wait_and_names_the_approval(live: Live) -> None:
    with _client(live, approval_timeout_seconds=0.5) as client:
        task = client.start_task("refund", on_behalf_of=OWNER)
        grant = client.issue_grant(task, REFUND)
        with pytest.raises(ApprovalTimeoutError) as timed_out:
            client.authorize(grant, "crm/issue_refund", LARGE)
    assert timed_out.value.code == "approval_timeout"
    assert f"`{timed_out.value.approval_id}`" in str(timed_out.value)


def test_a_denied_approval_is_a_refusal_with_the_approvers_comment(live: Live) -> None:
    def deny(verdict: Verdict) -> None:
        assert verdict.approval is not None
        live.operator.http.post(f"/v1/approvals/{verdict.approval.id}/deny",
                                json={"comment": "not this customer"}).raise_for_status()

    with _client(live, on_approval=deny, approval_timeout_seconds=30) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)
        with pytest.raises(ApprovalDeniedError, match="not this customer"):
            client.authorize(grant, "crm/issue_refund", LARGE)


def test_a_revoked_grant_is_refused_here_without_asking_again(live: Live) -> None:
    with _client(live) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)
        client.authorize(grant, "crm/issue_refund", SMALL)
        live.operator.revoke(grant.accessor)
        with pytest.raises(CallRefusedError) as first:
            client.authorize(grant, "crm/issue_refund", SMALL)
        decided = len(search_events(live.runtime.store, EventFilter(), limit=1000))
        with pytest.raises(CallRefusedError) as second:
            client.authorize(grant, "crm/issue_refund", SMALL)
        assert decided == len(search_events(live.runtime.store, EventFilter(), limit=1000))
    assert (first.value.code, second.value.code) == ("grant_revoked", "grant_revoked")
    assert "no longer usable" in second.value.reason


def test_a_server_that_is_down_refuses_the_call_within_the_timeout(live: Live) -> None:
    with _client(live) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)
    key = client.protocol.key
    with ProctorClient("http://127.0.0.1:9", client.agent_id, key,
                       timeout_seconds=2) as down:
        with pytest.raises(CallRefusedError) as refused:
            down.authorize(grant, "crm/issue_refund", SMALL)
        with pytest.raises(ClientError) as unreachable:
            down.start_task("refund", on_behalf_of=OWNER)
    assert refused.value.code == unreachable.value.code == "server_unavailable"


def test_a_clock_far_off_the_servers_is_named_in_the_refusal(live: Live) -> None:
    agent_id, key = live.operator.register_agent("support")
    with ProctorClient(live.base, agent_id, key) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)
    ahead = FrozenClock(SystemClock().now() + timedelta(minutes=10))
    # the identity proof is checked first: a clock off by minutes cannot even sign in
    with (ProctorClient(live.base, agent_id, key, clock=ahead) as skewed,
          pytest.raises(CallRefusedError) as refused):
        skewed.authorize(grant, "crm/issue_refund", SMALL)
    assert refused.value.code.startswith("proof_")
    off = re.search(r"clock is \+(\d+) s off proctor's", refused.value.reason)
    assert off is not None, refused.value.reason
    assert 590 <= int(off.group(1)) <= 610  # ten minutes ahead, give or take the test's run


def test_a_guarded_function_runs_only_when_proctor_allows_it(live: Live) -> None:
    ran: list[int] = []
    with _client(live) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)

        @guarded("crm/issue_refund")
        def issue_refund(customer_id: str, amount_cents: int = 100) -> int:
            ran.append(amount_cents)
            return amount_cents

        with pytest.raises(CallRefusedError) as unguarded:
            issue_refund("c-1001")
        with Guard(client, grant):
            assert issue_refund("c-1001") == 100
            with pytest.raises(CallRefusedError) as over:
                issue_refund("c-1001", amount_cents=60000)
    assert unguarded.value.code == "guard_missing"
    assert over.value.code == "grant_out_of_scope"
    assert ran == [100]


async def test_a_guarded_coroutine_is_decided_before_it_runs(live: Live) -> None:
    agent_id, key = live.operator.register_agent("support")
    async with AsyncProctorClient(live.base, agent_id, key) as client:
        grant = await client.issue_grant(
            await client.start_task("refund", on_behalf_of=OWNER), REFUND)

        @guarded("crm/issue_refund", guard=Guard(client, grant))
        async def issue_refund(customer_id: str, amount_cents: int) -> str:
            return customer_id

        assert await issue_refund("c-1", 100) == "c-1"
        with pytest.raises(CallRefusedError, match="arguments are not JSON"):
            await issue_refund("c-1", float("nan"))  # type: ignore[arg-type]


def test_an_agent_reads_its_own_approvals_and_no_one_elses(live: Live) -> None:
    with _client(live, approval_timeout_seconds=0) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)
        with pytest.raises(ApprovalTimeoutError) as waiting:
            client.authorize(grant, "crm/issue_refund", LARGE)
    with _client(live) as other, pytest.raises(ClientError) as refused:
        other._send(other.protocol.read_approval(waiting.value.approval_id))
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


def test_a_key_that_is_not_p256_or_ed25519_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(ValueError, match="P-256"):
        AgentKey(ec.generate_private_key(ec.SECP384R1()))
    assert AgentKey.from_pem(AgentKey.generate(kind="Ed25519").to_pem()).public_jwk()["crv"] \
        == "Ed25519"
