"""A grant's argument constraints hold on the real decision path: what a scope refuses
is a deny before policy, audited, and the grant's use is not spent on it."""

from __future__ import annotations

from proctor.policy import Outcome
from tests.enforcement.conftest import SUPPORT, Agents, refund

CAPPED = [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 5000}}}]


def test_a_negative_amount_under_a_max_is_out_of_scope_and_spends_no_use(
        agents: Agents) -> None:
    grant = agents.grant(SUPPORT, CAPPED, max_uses=1)
    for amount in (-1_000_000, -1, 5000.0, True, "5000"):
        verdict = agents.call(grant, "crm/issue_refund", refund(amount))  # type: ignore[arg-type]
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_out_of_scope"), amount
        assert verdict.event_id is not None
    assert agents.call(grant, "crm/issue_refund", refund(2500)).is_allowed


def test_a_path_that_steps_out_of_its_prefix_is_out_of_scope(agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "crm/lookup_customer",
                                    "args": {"customer_id": {"prefix": ["c-1001"]}}}])
    for value in ("c-1001/../c-2002", "c-10012", "c-1001/%2e%2e/c-2002"):
        verdict = agents.call(grant, "crm/lookup_customer", {"customer_id": value})
        assert (verdict.outcome, verdict.code) == (Outcome.DENY, "grant_out_of_scope"), value
    assert agents.call(grant, "crm/lookup_customer", {"customer_id": "c-1001"}).is_allowed
