"""The MCP Python SDK's client, guarded: the example CRM server over stdio, each
``call_tool`` decided by proctor before it reaches the server.

    PROCTOR_URL=http://127.0.0.1:8600 PROCTOR_ADMIN_TOKEN=ptk_… \\
        python -m examples.frameworks.mcp_client
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from examples.frameworks.operator import OWNER, Operator, Outcomes
from examples.frameworks.plain_decorator import SCOPE
from proctor.client import AsyncProctorClient, Guard
from proctor.client.mcp import GuardedSession

__all__ = ["CRM", "run"]

CRM = StdioServerParameters(command=sys.executable,
                            args=["-m", "proctor.examples.servers.crm"])


async def attempt(session: GuardedSession, tool: str, arguments: dict[str, Any]) -> str:
    """``allow`` if the server answered, else the reason of proctor's JSON-RPC error."""
    try:
        result = await session.call_tool(tool, arguments)
    except MCPError as refused:
        return str(refused.data["reason"])
    assert not result.is_error, result.content
    return "allow"


async def run_async(base_url: str, admin_token: str) -> dict[str, str]:
    operator = Operator(base_url, admin_token)
    outcomes = Outcomes()
    agent_id, key = operator.register_agent("support")
    async with AsyncProctorClient(base_url, agent_id, key, approval_timeout_seconds=30,
                                  on_approval=operator.approve_when_asked) as client:
        task = await client.start_task("refund a lost parcel", on_behalf_of=OWNER)
        grant = await client.issue_grant(task, SCOPE)
        async with stdio_client(CRM) as (read, write), ClientSession(read, write) as session:
            crm = GuardedSession(session, Guard(client, grant), server="crm")
            await crm.initialize()
            refund = {"customer_id": "c-1001", "amount_cents": 2500}
            outcomes.record("allowed", await attempt(crm, "issue_refund", refund))
            outcomes.record("denied", await attempt(crm, "lookup_customer",
                                                    {"customer_id": "c-1002"}))
            large = {"customer_id": "c-1001", "amount_cents": 25000}
            outcomes.record("approved", await attempt(crm, "issue_refund", large))
            await anyio.to_thread.run_sync(operator.revoke, grant.accessor)
            outcomes.record("revoked", await attempt(crm, "issue_refund", refund))
    operator.close()
    outcomes.record("approvals", str(len(operator.approved)))
    return outcomes.steps


def run(base_url: str, admin_token: str) -> dict[str, str]:
    result: dict[str, str] = anyio.run(run_async, base_url, admin_token)
    return result


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])
