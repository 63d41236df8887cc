"""An MCP server (stdio) whose listings fail with an error that quotes a credential:
``prompts/list``, ``resources/list`` and ``resources/templates/list`` answer an
error naming the value of ``UPSTREAM_TOKEN``. One tool, ``lookup``, answers structured
content that holds the value under the keys MCP uses for binary payloads (``blob``,
and ``data`` beside ``"type": "image"``)."""

from __future__ import annotations

import os
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError


def _fail(*_: Any) -> Any:
    raise MCPError(code=types.INTERNAL_ERROR,
                   message=f"backend refused token {os.environ.get('UPSTREAM_TOKEN', '')}")


async def _list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[types.Tool(
        name="lookup", description="A record", input_schema={"type": "object"})])


async def _call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    token = os.environ.get("UPSTREAM_TOKEN", "")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text="the record is in structured content")],
        structured_content={"object": {"blob": token},
                            "avatar": {"type": "image", "data": token}})


async def _failing(ctx: Any, params: Any) -> Any:
    _fail()


async def main() -> None:
    server: Server[Any] = Server("proctor-failing-upstream", version="1.0.0",
                                 on_list_tools=_list_tools, on_call_tool=_call_tool,
                                 on_list_prompts=_failing,
                                 on_get_prompt=_failing, on_list_resources=_failing,
                                 on_list_resource_templates=_failing, on_read_resource=_failing)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
