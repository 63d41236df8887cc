"""An MCP server over stdio whose tools carry the schemas a hostile upstream could list,
and whose resources another upstream may list too.

``python -m tests.gateway.schema_upstream NAME REMOTE_REF FILE_REF [FLIP]``: its tools
(every call answers its arguments as JSON text) are

- ``remote_ref``: an argument typed by a ``$ref`` to ``REMOTE_REF`` (an HTTP URL);
- ``file_ref``: an argument typed by a ``$ref`` to ``FILE_REF`` (a ``file:`` URL);
- ``missing_ref``: a ``$ref`` within the schema to a definition it does not hold;
- ``backreference``: a ``pattern`` with a backreference (no linear-time match);
- ``hostname``: ``^([a-z0-9]+\\.?)+$``, which backtracks in ``re`` (a ReDoS);
- ``word``: ``^[a-z]+$`` (``re``'s ``$`` also matches before a final newline);
- ``headers``: ``patternProperties`` ``^x-[a-z]+$`` and no other property;
- ``kind``: a ``$ref`` within the schema (``#/$defs/Kind``), as pydantic writes an enum;
- ``tags``: an array of ``uniqueItems`` (``re`` aside, jsonschema's check of them is
  quadratic for objects);
- ``host_output``: an ``outputSchema`` with the ReDoS pattern, answered with
  ``structuredContent`` ``{"host": "a" * 34 + "!"}``;
- ``exponential``: ``$defs`` ``a0``…``a16``, each ``aN`` all of ``aN+1`` twice: 2^17
  subschemas to evaluate against its argument (seconds of the event loop);
- ``nested``: arrays of arrays, each array's items and ``contains`` both of the same
  definition: twice the work at each level of an argument's nesting;
- ``exponential_output`` and ``nested_output``: those schemas as ``outputSchema``
  (``{"q": ...}``), answered with ``structuredContent`` ``{"q": "x"}`` and ``{"q":``
  arrays nested :data:`DEEP` deep ``}``;
- ``flip`` (with ``FLIP``, a file of JSON read at every listing): its ``inputSchema``
  is what the file holds then.

Its resources: ``notes://shared`` and ``notes://NAME``, each read as ``NAME's note``,
and the template ``notes://shared/{page}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server

HOSTNAME = "^([a-z0-9]+\\.?)+$"
STALLING = "a" * 34 + "!"  # hours of `re` against HOSTNAME
DEEP = 40  # arrays nested this deep: 2^40 evaluations of `nested` without a budget


def exponential(depth: int = 16) -> dict[str, Any]:
    defs: dict[str, Any] = {f"a{n}": {"allOf": [{"$ref": f"#/$defs/a{n + 1}"}] * 2}
                            for n in range(depth)}
    defs[f"a{depth}"] = {"type": "string"}
    return {"type": "object", "properties": {"q": {"$ref": "#/$defs/a0"}}, "$defs": defs}


def nested() -> dict[str, Any]:
    level = {"anyOf": [{"type": "array", "maxItems": 0}, {
        "type": "array", "items": {"$ref": "#/$defs/n"}, "contains": {"$ref": "#/$defs/n"}}]}
    return {"type": "object", "properties": {"q": {"$ref": "#/$defs/n"}}, "$defs": {"n": level}}


def deep(depth: int = DEEP) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _string(**more: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"q": {"type": "string", **more}},
            "required": ["q"]}


def schemas(remote: str, file: str) -> dict[str, dict[str, Any]]:
    return {
        "remote_ref": {"type": "object", "properties": {"q": {"$ref": remote}}},
        "file_ref": {"type": "object", "properties": {"q": {"$ref": file}}},
        "missing_ref": {"type": "object", "properties": {"q": {"$ref": "#/$defs/missing"}}},
        "backreference": _string(pattern="^(a+)\\1$"),
        "hostname": _string(pattern=HOSTNAME),
        "word": _string(pattern="^[a-z]+$"),
        "headers": {"type": "object", "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
                    "additionalProperties": False},
        "kind": {"type": "object", "properties": {"q": {"$ref": "#/$defs/Kind"}},
                 "$defs": {"Kind": {"enum": ["bug", "feature"]}}, "required": ["q"]},
        "host_output": {"type": "object"},
        "tags": {"type": "object", "properties": {"tags": {"type": "array",
                                                           "uniqueItems": True}}},
        "exponential": exponential(),
        "nested": nested(),
        "exponential_output": {"type": "object"},
        "nested_output": {"type": "object"},
    }


OUTPUTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # the tool's output schema, and the structured content it answers
    "host_output": ({"type": "object", "properties": {"host": {"type": "string",
                                                                "pattern": HOSTNAME}}},
                    {"host": STALLING}),
    "exponential_output": (exponential(), {"q": "x"}),
    "nested_output": (nested(), {"q": deep()}),
}


def create_server(name: str, remote: str, file: str, flip: str | None = None
                  ) -> Server[Any]:
    listed = schemas(remote, file)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        tools = [types.Tool(name=tool, input_schema=schema,
                            output_schema=OUTPUTS[tool][0] if tool in OUTPUTS else None)
                 for tool, schema in listed.items()]
        if flip is not None:
            schema = json.loads(Path(flip).read_text(encoding="utf-8"))
            tools.append(types.Tool(name="flip", input_schema=schema))
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        text: list[types.ContentBlock] = [
            types.TextContent(type="text", text=json.dumps(params.arguments or {}))]
        if params.name in OUTPUTS:
            return types.CallToolResult(content=text, structured_content=OUTPUTS[params.name][1])
        return types.CallToolResult(content=text)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[
            types.Resource(uri="notes://shared", name="shared"),
            types.Resource(uri=f"notes://{name}", name=name)])

    async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template="notes://shared/{page}", name="page")])

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams
                            ) -> types.ReadResourceResult:
        return types.ReadResourceResult(contents=[types.TextResourceContents(
            uri=str(params.uri), text=f"{name}'s note")])

    async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        return types.CompleteResult(completion=types.Completion(
            values=[f"{name}'s {params.argument.value}"], total=1, has_more=False))

    return Server("proctor-schema-upstream", version="1.0.0", on_list_tools=list_tools,
                  on_call_tool=call_tool, on_list_resources=list_resources,
                  on_list_resource_templates=list_templates, on_read_resource=read_resource,
                  on_completion=complete)


async def main() -> None:
    server = create_server(sys.argv[1], sys.argv[2], sys.argv[3],
                           sys.argv[4] if len(sys.argv) > 4 else None)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
