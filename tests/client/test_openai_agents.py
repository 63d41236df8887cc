"""The OpenAI Agents SDK adapter against the real SDK, driven by its scripted test model:
proctor's guardrail decides each function tool call; a refusal is the SDK's
reject_content, and the tool does not run."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.conftest import IN_CI

if importlib.util.find_spec("agents") is None:  # the `openai-agents` extra
    if IN_CI:
        raise RuntimeError("openai-agents is missing: CI syncs every extra")
    pytest.skip("the openai-agents extra is not installed", allow_module_level=True)

from examples.frameworks.operator import OWNER

from proctor.client import AsyncProctorClient, Guard

from .conftest import Live

pytestmark = pytest.mark.anyio


@pytest.fixture
def example() -> ModuleType:
    """The example; it imports the OpenAI Agents SDK (~2.4 s of CPU), which a worker pays
    only if it runs these tests, not for collecting them."""
    from examples.frameworks import openai_agents

    return openai_agents


def test_the_openai_agents_example_allows_denies_waits_and_stops_on_revocation(
        live: Live, example: ModuleType) -> None:
    example.issued.clear()
    assert example.run(live.base, live.admin_token) == {
        "allowed": "allow", "denied": "grant_out_of_scope", "approved": "allow",
        "revoked": "grant_revoked", "approvals": "1"}
    assert [r["amount_cents"] for r in example.issued] == [2500, 25000]


async def test_the_model_reads_proctors_code_and_reason_and_the_tool_does_not_run(
        live: Live, example: ModuleType) -> None:
    example.issued.clear()
    agent_id, key = live.operator.register_agent("support")
    async with AsyncProctorClient(live.base, agent_id, key,
                                  approval_timeout_seconds=0) as client:
        grant = await client.issue_grant(await client.start_task("refund", on_behalf_of=OWNER),
                                         [{"tool": "crm/issue_refund"}])
        guard = Guard(client, grant)
        pending = await example.run_agent(guard, "issue_refund",
                                          {"customer_id": "c-1001", "amount_cents": 25000})
        forbidden = await example.run_agent(guard, "issue_refund",
                                            {"customer_id": "c-1001", "amount_cents": 900000})
        garbled = await example.run_agent(guard, "issue_refund", {"customer_id": 5})
    assert pending.startswith("proctor refused `crm/issue_refund` (approval_timeout): approval `")
    assert forbidden == ("proctor refused `crm/issue_refund` (policy_forbid): no agent refunds "
                         "more than 1,000.00")
    assert garbled == ("proctor refused `crm/issue_refund` (invalid_request): argument "
                       "`args.customer_id` must be of type String")
    assert example.issued == []
