"""An MCP server whose listings fail with an error that quotes a credential:
``prompts/list``, ``resources/list`` and ``resources/templates/list`` answer an
error naming a token (over stdio: the value of ``UPSTREAM_TOKEN``) in its message
and its ``data``, and so does ``tools/list`` after ``lists`` answers. One tool,
``lookup``, answers structured content that holds the token under the keys MCP uses
for binary payloads (``blob``, and ``data`` beside ``"type": "image"``)."""

from __future__ import annotations

import os
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError


def create_server(token: str, lists: int | None = None) -> Server[Any]:
    """The server, quoting ``token`` (served over stdio by ``main``, or over streamable
    HTTP with ``streamable_http_app()``)."""

    def fail() -> Any:
        raise MCPError(code=types.INTERNAL_ERROR, message=f"backend refused token {token}",
                       data={"token": token})

    listed = 0

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        nonlocal listed
        listed += 1
        if lists is not None and listed > lists:
            fail()
        return types.ListToolsResult(tools=[types.Tool(
            name="lookup", description="A record", input_schema={"type": "object"})])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text="the record is in structured content")],
            structured_content={"object": {"blob": token},
                                "avatar": {"type": "image", "data": token}})

    async def failing(ctx: Any, params: Any) -> Any:
        fail()

    return Server("proctor-failing-upstream", version="1.0.0",
                  on_list_tools=list_tools, on_call_tool=call_tool, on_list_prompts=failing,
                  on_get_prompt=failing, on_list_resources=failing,
                  on_list_resource_templates=failing, on_read_resource=failing)


async def main() -> None:
    server = create_server(os.environ.get("UPSTREAM_TOKEN", ""))
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
