"""An MCP server that hands out ``token`` inside base64 media, where a careless server
puts a credential: a PNG's metadata (an image's ``data``), a config file (a resource's
``blob``, in a call's result and read as ``config://app``); and, from the tool
``mislabelled``, ``other`` (a credential the gateway did not inject) as text where
binary payloads go: an image's ``data``, a resource's ``blob``, ``_meta.blob``.
Served over streamable HTTP in the tests' process (``streamable_http_app()``)."""

from __future__ import annotations

import base64
from typing import Any

import mcp.types as types
from mcp.server import Server

_PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create_server(token: str, other: str = "") -> Server[Any]:
    secret = token.encode()
    config = b"[backend]\nuser = svc\ntoken = " + secret + b"\nretries = 3\n"
    blob = types.BlobResourceContents(uri="config://app", mime_type="text/plain",
                                      blob=_b64(config))

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(
            name=name, description="An image and a file", input_schema={"type": "object"})
            for name in ("media", "mislabelled")])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name == "mislabelled":
            text = f"token: {other}"
            return types.CallToolResult(_meta={"blob": text}, content=[
                types.ImageContent(type="image", mime_type="image/png", data=text),
                types.EmbeddedResource(type="resource", resource=types.BlobResourceContents(
                    uri="config://app", mime_type="text/plain", blob=text))])
        return types.CallToolResult(content=[
            types.ImageContent(type="image", mime_type="image/png",
                               data=_b64(_PNG + b"tEXtkey\x00" + secret + b"\x00IEND")),
            types.EmbeddedResource(type="resource", resource=blob)])

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(
            uri="config://app", name="config", mime_type="text/plain")])

    async def read_resource(ctx: Any, params: Any) -> types.ReadResourceResult:
        return types.ReadResourceResult(contents=[blob])

    return Server("proctor-media-upstream", version="1.0.0", on_list_tools=list_tools,
                  on_call_tool=call_tool, on_list_resources=list_resources,
                  on_read_resource=read_resource)
