"""The MCP client adapter against the real MCP SDK and the example CRM server over stdio:
allowed calls reach the server, refused ones never do and come back as the gateway's
JSON-RPC errors."""

from __future__ import annotations

import pytest
from examples.frameworks.mcp_client import CRM, run
from examples.frameworks.operator import OWNER
from mcp import ClientSession, stdio_client
from mcp.shared.exceptions import MCPError

from proctor.client import AsyncProctorClient, Guard
from proctor.client.mcp import APPROVAL_PENDING, CALL_DENIED, GuardedSession

from .conftest import Live

pytestmark = pytest.mark.anyio

REFUND = [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}}]


def test_the_mcp_example_allows_denies_waits_for_a_human_and_stops_on_revocation(
        live: Live) -> None:
    assert run(live.base, live.admin_token) == {
        "allowed": "allow", "denied": "grant_out_of_scope", "approved": "allow",
        "revoked": "grant_revoked", "approvals": "1"}


async def test_a_refused_call_is_the_gateways_error_and_never_reaches_the_server(
        live: Live) -> None:
    agent_id, key = live.operator.register_agent("support")
    async with AsyncProctorClient(live.base, agent_id, key,
                                  approval_timeout_seconds=0) as client:
        grant = await client.issue_grant(
            await client.start_task("refund", on_behalf_of=OWNER), REFUND)
        async with stdio_client(CRM) as (read, write), ClientSession(read, write) as session:
            crm = GuardedSession(session, Guard(client, grant), server="crm")
            await crm.initialize()
            with pytest.raises(MCPError) as over:
                await crm.call_tool("issue_refund", {"customer_id": "c-1001",
                                                     "amount_cents": 90000})
            with pytest.raises(MCPError) as pending:
                await crm.call_tool("issue_refund", {"customer_id": "c-1001",
                                                     "amount_cents": 30000})
            allowed = await crm.call_tool("issue_refund", {"customer_id": "c-1001",
                                                           "amount_cents": 100})
    assert over.value.code == CALL_DENIED
    assert over.value.message.startswith("grant_out_of_scope: ")
    assert over.value.data["reason"] == "grant_out_of_scope"
    assert over.value.data["event_id"]
    assert pending.value.code == APPROVAL_PENDING
    assert pending.value.data["approval_id"]
    # the refused refunds never reached the CRM: the first one issued is rf-0001
    assert allowed.structured_content["refund_id"] == "rf-0001"


def test_a_server_name_with_a_slash_is_refused() -> None:
    with pytest.raises(ValueError, match="catalog server name"):
        GuardedSession(None, None, server="crm/x")  # type: ignore[arg-type]
