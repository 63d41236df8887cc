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

from examples.frameworks.support import async_support_agent, play_steps
from proctor.client import Guard
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
    async with async_support_agent(base_url, admin_token) as support, \
            stdio_client(CRM) as (read, write), ClientSession(read, write) as session:
        crm = GuardedSession(session, Guard(support.client, support.grant), server="crm")
        await crm.initialize()
        # the CRM server has no email tool: the call outside the scope is a lookup
        await play_steps(support, lambda tool, arguments: attempt(crm, tool, arguments),
                         denied=("lookup_customer", {"customer_id": "c-1002"}))
    return support.outcomes.steps


def run(base_url: str, admin_token: str) -> dict[str, str]:
    result: dict[str, str] = anyio.run(run_async, base_url, admin_token)
    return result


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])
