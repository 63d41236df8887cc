"""An MCP server (stdio as a module; streamable HTTP in the tests' process with
``create_server().streamable_http_app()``) whose calls wait for the test: what it sends
during one call while another is in flight shows whom the gateway hands it to.

- ``tell`` (``started``, ``gate``, ``line``, ``ask``): touches the file ``started``, waits
  until the file ``gate`` exists, then logs ``line`` (and ``ask`` times, asks the client's
  user about it: ``elicitation/create``), and answers ``told``;
- ``wait`` (``started``, ``gate``): touches ``started``, waits for ``gate``, answers
  ``waited``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

_STEP = 0.01  # how often a call looks for its gate (the test bounds every wait)


async def _through_gate(args: dict[str, Any]) -> None:
    Path(str(args["started"])).touch()
    while not Path(str(args["gate"])).exists():
        await anyio.sleep(_STEP)


def create_server() -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(
            name=name, description=name, input_schema={"type": "object"})
            for name in ("tell", "wait")])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        await _through_gate(args)
        if params.name == "wait":
            return types.CallToolResult(content=[types.TextContent(type="text",
                                                                   text="waited")])
        line = str(args["line"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.session.send_log_message("info", line, None,
                                               related_request_id=ctx.request_id)
        told = "told"
        for _ in range(int(args.get("ask") or 0)):
            try:
                answer = await ctx.session.elicit_form(
                    line, {"type": "object", "properties": {"text": {"type": "string"}}},
                    related_request_id=ctx.request_id)
                told = f"told ({answer.action})"
            except MCPError as exc:
                told = f"told (refused {exc.error.code})"
        return types.CallToolResult(content=[types.TextContent(type="text", text=told)])

    return Server("proctor-routing-upstream", version="1.0.0", on_list_tools=list_tools,
                  on_call_tool=call_tool)


if __name__ == "__main__":
    async def _serve() -> None:
        async with stdio_server() as (read, write):
            routing = create_server()
            await routing.run(read, write, routing.create_initialization_options())

    anyio.run(_serve)
