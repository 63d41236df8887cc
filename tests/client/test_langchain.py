"""The LangChain / LangGraph adapter against the real libraries: the prebuilt ToolNode
and a wrapped tool, each call decided by proctor; a refusal is an error ToolMessage with
proctor's code, and the tool does not run."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.conftest import IN_CI

if importlib.util.find_spec("langgraph") is None:  # the `langchain` extra
    if IN_CI:
        raise RuntimeError("langgraph is missing: CI syncs every extra")
    pytest.skip("the langchain extra is not installed", allow_module_level=True)

from examples.frameworks.operator import OWNER

from proctor.client import AsyncProctorClient, Guard, ProctorClient

from .conftest import Live

pytestmark = pytest.mark.anyio

REFUND = [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}}]


@pytest.fixture
def example() -> ModuleType:
    """The example; it imports LangChain and LangGraph (~1.6 s of CPU), which a worker
    pays only if it runs these tests, not for collecting them."""
    from examples.frameworks import langchain_tools

    return langchain_tools


def test_the_langgraph_example_allows_denies_waits_and_stops_on_revocation(
        live: Live, example: ModuleType) -> None:
    example.issued.clear()
    assert example.run(live.base, live.admin_token) == {
        "allowed": "allow", "denied": "grant_out_of_scope", "approved": "allow",
        "revoked": "grant_revoked", "approvals": "1"}
    assert [r["amount_cents"] for r in example.issued] == [2500, 25000]


def test_a_refusal_is_an_error_tool_message_with_proctors_code(
        live: Live, example: ModuleType) -> None:
    from langchain_core.messages import ToolMessage

    from proctor.client.langchain import proctor_tool_node

    example.issued.clear()
    agent_id, key = live.operator.register_agent("support")
    with ProctorClient(live.base, agent_id, key, approval_timeout_seconds=0) as client:
        grant = client.issue_grant(client.start_task("refund", on_behalf_of=OWNER), REFUND)
        guard = Guard(client, grant)
        pending = example.call(guard, "issue_refund", {"customer_id": "c-1", "amount_cents": 30000})
        unmapped = example.run_node(proctor_tool_node([example.issue_refund], guard),
                                    "issue_refund", {"customer_id": "c-1", "amount_cents": 1})
    assert isinstance(pending, ToolMessage)
    assert (pending.status, pending.tool_call_id, pending.artifact["code"]) == (
        "error", "call-1", "approval_timeout")
    assert pending.artifact["approval"]
    assert pending.content.startswith(  # type: ignore[union-attr]
        "proctor refused `crm/issue_refund` (approval_timeout): approval `")
    assert (unmapped.status, unmapped.artifact["code"]) == ("error", "tool_unmapped")
    assert example.issued == []


async def test_a_wrapped_tool_is_decided_before_it_runs_sync_and_async(
        live: Live, example: ModuleType) -> None:
    from proctor.client.langchain import guard_tool

    example.issued.clear()
    agent_id, key = live.operator.register_agent("support")
    async with AsyncProctorClient(live.base, agent_id, key) as client:
        grant = await client.issue_grant(
            await client.start_task("refund", on_behalf_of=OWNER), REFUND)
        refund = guard_tool(example.issue_refund, Guard(client, grant), name="crm/issue_refund")
        assert (refund.name, refund.args) == ("issue_refund", example.issue_refund.args)
        ran = await refund.ainvoke({"customer_id": "c-1", "amount_cents": 100})
        over = await refund.ainvoke({"customer_id": "c-1", "amount_cents": 90000})
    assert ran == "refunded 100 cents to c-1"
    assert over.startswith("proctor refused `crm/issue_refund` (grant_out_of_scope)")
    assert example.issued == [{"customer_id": "c-1", "amount_cents": 100}]
