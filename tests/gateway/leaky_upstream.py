"""An MCP server for the gateway's leak tests (stdio as a module; streamable HTTP in the
tests' process with ``create_server(token).streamable_http_app()``).

- Subscriptions as the spec has them, per connection (one per process, on stdio):
  ``resources/subscribe`` and ``resources/unsubscribe`` of ``notes://readme`` (or any
  URI), and the tool ``touch`` (``uri``) sends ``notifications/resources/updated``
  for it only if the connection follows it, and answers
  ``sent`` or ``not subscribed``: what the gateway forwarded of its agents'
  subscriptions, told by a real server.
- ``flood`` (``count``, ``size``): logs ``count`` messages of ``size`` characters on the
  call, then answers: an agent that does not read its stream gets far behind.
- ``encoded`` (``form``): ``token`` (given to :func:`create_server`, or the environment
  variable ``UPSTREAM_TOKEN``) in one of the encodings of :data:`FORMS` (base64 wrapped
  at 76 columns, stacked encodings, split by a NUL or zero-width characters, split
  across two fields of the structured content...), or each of these hiding places
  inside base64 media (a text file's ``blob``, an image's metadata).
"""

from __future__ import annotations

import base64
import os
import warnings
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPDeprecationWarning

_PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def _text(*texts: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=t) for t in texts]


def _forms(token: str) -> dict[str, list[types.ContentBlock]]:
    raw = token.encode()
    half = len(token) // 2
    forms: dict[str, list[types.ContentBlock]] = {
        "hex_lower": _text(f"digest-ish: {raw.hex()} end"),
        "hex_upper": _text(f"DUMP {raw.hex().upper()}"),
        "html_hex": _text("<p>" + "".join(f"&#x{ord(c):x};" for c in token) + "</p>"),
        "html_hex_upper": _text("".join(f"&#X{ord(c):X};" for c in token)),
        "html_decimal": _text("<td>" + "".join(f"&#{ord(c)};" for c in token) + "</td>"),
        "html_some": _text(token[:3] + "".join(f"&#{ord(c)};" for c in token[3:6])
                           + token[6:]),
        "split_items": _text(f"the token is {token[:half]}", f"{token[half:]} (split)"),
        "split_three": _text(f"a {token[:5]}", token[5:9], f"{token[9:]} b"),
        "media_unpadded": [types.ImageContent(
            type="image", mime_type="image/png",
            data=base64.b64encode(_PNG + b"k\x00" + raw + b"\x00IEND").decode().rstrip("="))],
        "media_urlsafe": [types.ImageContent(
            type="image", mime_type="image/png",
            data=base64.urlsafe_b64encode(_PNG + b"\xfb\xff" + raw + b"\xff").decode())],
        "media_hex": [types.ImageContent(
            type="image", mime_type="image/png",
            data=base64.b64encode(_PNG + b"id=" + raw.hex().encode() + b";").decode())],
    }
    wrapped = base64.b64encode(_PNG * 3 + raw + b";" * 80).decode()  # across a line break
    forms["mime_wrapped"] = _text("\r\n".join(wrapped[i:i + 76]
                                               for i in range(0, len(wrapped), 76)))
    forms["base64_of_hex"] = _text(f"id={base64.b64encode(raw.hex().encode()).decode()};")
    forms["percent_of_base64"] = _text("q=" + "".join(f"%{b:02X}"
                                                      for b in base64.b64encode(raw)))
    forms["nul_split"] = _text(f"token {token[:6]}\x00{token[6:]} end")
    forms["zero_width"] = _text("\u200b".join(token))
    forms["structured_split"] = _text("see the structured content")
    # media as the guard reads text: each hiding place above, in the bytes of a text
    # file (a resource's blob) or an image's metadata
    in_media = {
        "zero_width": "\u200b".join(token).encode(),
        "nul_split": raw[:6] + b"\x00" + raw[6:],
        "utf16": ("token=" + token).encode("utf-16-le"),
        "mime_wrapped": "\r\n".join(wrapped[i:i + 76]
                                      for i in range(0, len(wrapped), 76)).encode(),
        "base64": b"id=" + base64.b64encode(raw) + b";",
        "prefixed_hex_of_base64": b"0x" + base64.b64encode(raw).hex().encode(),
        "html_hex": "".join(f"&#x{ord(c):x};" for c in token).encode(),
    }
    for name, data in in_media.items():
        forms[f"blob_{name}"] = [types.EmbeddedResource(
            type="resource", resource=types.BlobResourceContents(
                uri="file:///notes.txt", mime_type="text/plain",
                blob=base64.b64encode(b"notes:\n" + data + b"\nend\n").decode()))]
        forms[f"image_{name}"] = [types.ImageContent(
            type="image", mime_type="image/png",
            data=base64.b64encode(_PNG + b"tEXtk\x00" + data + b"\x00IEND").decode())]
    for offset in range(3):
        for pad in ("padded", "unpadded"):
            encoded = base64.urlsafe_b64encode(b"\xfb\xff\xfe"[:offset] + raw + b"\xff")
            text = encoded.decode() if pad == "padded" else encoded.decode().rstrip("=")
            forms[f"base64url_{offset}_{pad}"] = _text(f"cookie={text};")
    return forms


FORMS = sorted(_forms("x" * 16))


def create_server(token: str | None = None) -> Server[Any]:
    following: set[str] = set()  # the URIs the connection follows (stdio: one connection)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(
            name=name, description=name, input_schema={"type": "object"})
            for name in ("touch", "flood", "encoded")])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        if params.name == "touch":
            uri = str(args["uri"])
            if uri not in following:
                return types.CallToolResult(content=_text("not subscribed"))
            await ctx.session.send_resource_updated(uri)
            return types.CallToolResult(content=_text("sent"))
        if params.name == "flood":
            line = "x" * int(args["size"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                for _ in range(int(args["count"])):
                    await ctx.session.send_log_message("info", line, None,
                                                       related_request_id=ctx.request_id)
            return types.CallToolResult(content=_text(f"logged {args['count']}"))
        secret = token if token is not None else os.environ["UPSTREAM_TOKEN"]
        form = str(args["form"])
        # two fields of one object, read joined
        structured = {"head": secret[:10], "tail": secret[10:]} \
            if form == "structured_split" else None
        return types.CallToolResult(content=_forms(secret)[form],
                                    structured_content=structured)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(
            uri="notes://readme", name="readme")])

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        following.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams
                          ) -> types.EmptyResult:
        following.discard(str(params.uri))
        return types.EmptyResult()

    return Server("proctor-leaky-upstream", version="1.0.0", on_list_tools=list_tools,
                  on_call_tool=call_tool, on_list_resources=list_resources,
                  on_subscribe_resource=subscribe, on_unsubscribe_resource=unsubscribe)


async def main() -> None:
    server = create_server()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
