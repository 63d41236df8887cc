"""An MCP server over stdio whose tools guard their arguments with ECMA-262 patterns that
RE2 reads otherwise (:mod:`proctor.gateway.ecma_regex`); every call answers its
arguments as JSON text.

``python -m tests.gateway.pattern_upstream``: the tools are in :data:`PATTERNS`, each
with one string argument ``q`` (``headers`` has ``x-…`` keys only, ``no_space`` says
``not`` a ``\\s``). ``flag_group``, ``lookahead`` and ``backreference`` hold a pattern the
gateway refuses.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

PATTERNS = {
    "argv": "^\\S+$",  # one shell word: no space of any kind
    "command": "^[^\\s;|&]+$",
    "header": "^.{1,64}$",  # one header value: no line break of any kind
    "line": "^.*$",
    "empty_class": "^[]a]*$",  # `[]` matches nothing in ECMA-262; RE2: a class of `]a`
    "word": "^[a-z]+$",
    "digits": "^\\d+$",
    "boundary": "\\bfoo\\b",
    "two": "^.{0,2}$",
    "flag_group": "^(?s:.)+$",
    "lookahead": "^(?=a)",
    "backreference": "^(a)\\1$",
}
REFUSED = ["backreference", "flag_group", "lookahead"]


def schemas() -> dict[str, dict[str, Any]]:
    listed: dict[str, dict[str, Any]] = {
        name: {"type": "object", "properties": {"q": {"type": "string", "pattern": pattern}},
               "required": ["q"]} for name, pattern in PATTERNS.items()}
    listed["headers"] = {"type": "object", "patternProperties": {
        "^x-\\S+$": {"type": "string"}}, "additionalProperties": False}
    listed["no_space"] = {"type": "object", "properties": {
        "q": {"type": "string", "not": {"pattern": "\\s"}}}, "required": ["q"]}
    return listed


def create_server() -> Server[Any]:
    listed = schemas()

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name=name, input_schema=schema)
                                            for name, schema in listed.items()])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[
            types.TextContent(type="text", text=json.dumps(params.arguments or {}))])

    return Server("proctor-pattern-upstream", version="1.0.0", on_list_tools=list_tools,
                  on_call_tool=call_tool)


async def main() -> None:
    server = create_server()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
