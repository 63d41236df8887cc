"""An MCP server that says ``resources/updated`` of what it is asked to subscribe to
before it answers the subscribe (over stdio as a module, or its app over HTTP)."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

URI = "eager://news"


def create_server() -> Server[Any]:
    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        await ctx.session.send_resource_updated(params.uri)
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: Any) -> types.EmptyResult:
        return types.EmptyResult()

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(uri=URI, name="news")])

    return Server("proctor-eager-upstream", version="1.0.0",
                  on_list_resources=list_resources, on_subscribe_resource=subscribe,
                  on_unsubscribe_resource=unsubscribe)


async def main() -> None:
    server = create_server()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
