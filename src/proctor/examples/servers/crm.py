"""A small CRM as an MCP server over stdio, for ``proctor demo`` and the quickstart.

It answers the example catalog's ``crm`` tools (``lookup_customer``,
``issue_refund``) from an in-memory table. One customer's notes hold an API
key pasted by a careless colleague — generated fresh at start, never a real
credential — so that the gateway's output guard has something to redact.

Run it directly with ``python -m proctor.examples.servers.crm``.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

__all__ = ["create_server"]


def _customers() -> dict[str, dict[str, Any]]:
    pasted_key = "sk_live_" + secrets.token_hex(16)  # looks like a Stripe key; is random
    return {
        "c-1001": {"id": "c-1001", "name": "Dana Whitfield", "plan": "business",
                   "email": "dana@whitfield.example", "balance_cents": 129900,
                   "notes": "prefers email; billing contact is the CFO"},
        "c-1002": {"id": "c-1002", "name": "Okafor Logistics", "plan": "enterprise",
                   "email": "ap@okafor.example", "balance_cents": 2450000,
                   "notes": f"integration set up by support, key {pasted_key} for their webhook"},
    }


def create_server() -> MCPServer:
    customers = _customers()
    refunds: list[dict[str, Any]] = []
    server = MCPServer("proctor-demo-crm", version="1.0.0", subscriptions=False)

    @server.tool(name="lookup_customer", description="Look up a customer by id")
    def lookup_customer(
        customer_id: Annotated[str, Field(description="the customer's id, e.g. c-1001")],
    ) -> dict[str, Any]:
        customer = customers.get(customer_id)
        if customer is None:
            raise ToolError(f"no customer `{customer_id}`")
        return customer

    @server.tool(name="issue_refund", description="Refund a customer, in cents")
    def issue_refund(
        customer_id: Annotated[str, Field(description="the customer's id")],
        amount_cents: Annotated[int, Field(description="the amount to refund, in cents")],
        reason: Annotated[str, Field(description="why the refund is given")] = "",
    ) -> dict[str, Any]:
        if customer_id not in customers:
            raise ToolError(f"no customer `{customer_id}`")
        if amount_cents <= 0:
            raise ToolError("the amount must be positive")
        refund = {"refund_id": f"rf-{len(refunds) + 1:04d}", "customer_id": customer_id,
                  "amount_cents": amount_cents, "reason": reason, "status": "issued"}
        refunds.append(refund)
        return refund

    return server


def main() -> None:
    import anyio

    anyio.run(create_server().run_stdio_async)


if __name__ == "__main__":
    main()
