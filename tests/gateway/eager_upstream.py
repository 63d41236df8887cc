"""An MCP server that says ``resources/updated`` of what it is asked to subscribe to
before it answers the subscribe (over stdio as a module, or its app over HTTP)."""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server import Server

from tests.gateway.over_stdio import run_over_stdio

URI = "eager://news"


def create_server() -> Server[Any]:
    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        await ctx.session.send_resource_updated(params.uri)
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: Any) -> types.EmptyResult:
        return types.EmptyResult()

    async def resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(uri=URI, name="news")])

    return Server("proctor-eager-upstream", version="1.0.0", on_list_resources=resources,
                  on_subscribe_resource=subscribe, on_unsubscribe_resource=unsubscribe)


if __name__ == "__main__":
    run_over_stdio(create_server())
