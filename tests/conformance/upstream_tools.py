"""The conformance upstream's tools: one per server scenario of the MCP conformance suite.

Names, arguments and results follow what each scenario calls and checks
(``conformance list --server`` names them; each scenario's description in the
suite spells out its tool). Tools that talk back to the client (logging,
progress, sampling, elicitation) do so on the request's own stream.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import warnings
import wave
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import mcp.types as types
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

Context = ServerRequestContext[Any, Any]
Content = types.TextContent | types.ImageContent | types.AudioContent | types.EmbeddedResource
ToolBody = Callable[[Context, dict[str, Any]], Awaitable[list[Content]]]

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _png_1x1() -> bytes:
    """A valid one-pixel red PNG, built here rather than pasted in."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte, then one red pixel
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _wav_silence() -> bytes:
    """A valid WAV file holding one silent 16-bit mono sample."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00")
    return buffer.getvalue()


PNG = _png_1x1()
PNG_BASE64 = base64.b64encode(PNG).decode("ascii")
WAV_BASE64 = base64.b64encode(_wav_silence()).decode("ascii")


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")


def embedded(uri: str, mime_type: str, value: str) -> types.EmbeddedResource:
    contents = types.TextResourceContents(uri=uri, mime_type=mime_type, text=value)
    return types.EmbeddedResource(type="resource", resource=contents)


async def _log(ctx: Context, message: str) -> None:
    # Logging is deprecated from protocol 2026-07-28 on; the suite still checks it
    # at 2025-11-25, where the SDK sends it as before.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await ctx.session.send_log_message("info", message, related_request_id=ctx.request_id)


async def simple_text(ctx: Context, args: dict[str, Any]) -> list[Content]:
    return [text("This is a simple text response for testing.")]


async def image_content(ctx: Context, args: dict[str, Any]) -> list[Content]:
    return [image()]


async def audio_content(ctx: Context, args: dict[str, Any]) -> list[Content]:
    return [types.AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]


async def embedded_resource(ctx: Context, args: dict[str, Any]) -> list[Content]:
    return [embedded("test://embedded-resource", "text/plain", "This is an embedded resource.")]


async def multiple_content_types(ctx: Context, args: dict[str, Any]) -> list[Content]:
    data = json.dumps({"test": "data", "value": 123})
    return [
        text("Multiple content types test:"),
        image(),
        embedded("test://mixed-content-resource", "application/json", data),
    ]


async def with_logging(ctx: Context, args: dict[str, Any]) -> list[Content]:
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await _log(ctx, message)
    return [text("Tool with logging executed successfully")]


async def with_progress(ctx: Context, args: dict[str, Any]) -> list[Content]:
    for step in (0, 50, 100):
        await ctx.session.report_progress(step, 100, f"Completed step {step} of 100")
    token = ctx.meta.get("progress_token") if ctx.meta else None
    return [text(f"progress reported to token {token}")]


async def error_handling(ctx: Context, args: dict[str, Any]) -> list[Content]:
    raise ToolFailedError("This tool intentionally returns an error for testing")


async def sampling(ctx: Context, args: dict[str, Any]) -> list[Content]:
    message = types.SamplingMessage(role="user", content=text(str(args.get("prompt", ""))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        result = await ctx.session.create_message(
            [message], max_tokens=100, related_request_id=ctx.request_id
        )
    answer = result.content.text if isinstance(result.content, types.TextContent) else "(no text)"
    return [text(f"LLM response: {answer}")]


async def _elicit(ctx: Context, message: str, properties: dict[str, Any], **extra: Any) -> str:
    schema = {"type": "object", "properties": properties, **extra}
    result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    return f"action={result.action}, content={json.dumps(result.content or {})}"


async def elicitation(ctx: Context, args: dict[str, Any]) -> list[Content]:
    properties = {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    }
    outcome = await _elicit(
        ctx, str(args.get("message", "")), properties, required=["username", "email"]
    )
    return [text(f"User response: {outcome}")]


async def elicitation_defaults(ctx: Context, args: dict[str, Any]) -> list[Content]:
    properties = {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {
            "type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
    }
    outcome = await _elicit(ctx, "Please review your details", properties)
    return [text(f"Elicitation completed: {outcome}")]


def _titled(prefix: str, titles: list[str]) -> list[dict[str, str]]:
    return [{"const": f"{prefix}{n}", "title": t} for n, t in enumerate(titles, start=1)]


async def elicitation_enums(ctx: Context, args: dict[str, Any]) -> list[Content]:
    options = ["option1", "option2", "option3"]
    properties = {
        "untitledSingle": {"type": "string", "enum": options},
        "titledSingle": {"type": "string", "oneOf": _titled("value", ["First", "Second", "Third"])},
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": options}},
        "titledMulti": {
            "type": "array",
            "items": {"anyOf": _titled("value", ["First Choice", "Second Choice", "Third"])},
        },
    }
    outcome = await _elicit(ctx, "Please pick from each kind of enum", properties)
    return [text(f"Elicitation completed: {outcome}")]


async def json_schema_2020_12(ctx: Context, args: dict[str, Any]) -> list[Content]:
    return [text(f"received {json.dumps(args, sort_keys=True)}")]


async def reconnection(ctx: Context, args: dict[str, Any]) -> list[Content]:
    # Closing the stream mid-call makes the client reconnect with Last-Event-ID; the
    # rest of the call (this log, the result) reaches it from the event store.
    await _log(ctx, "Before disconnect")
    if ctx.close_sse_stream is not None:
        await ctx.close_sse_stream()
    await _log(ctx, "After reconnect")
    return [text("Reconnection test completed")]


class ToolFailedError(Exception):
    """A tool's own failure: reported to the client as a result with ``isError``."""


def _string_argument(name: str, description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": description}},
        "required": [name],
    }


_ADDRESS_SCHEMA: dict[str, Any] = {
    "$schema": SCHEMA_2020_12,
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

# name -> (description, input schema, body)
TOOLS: dict[str, tuple[str, dict[str, Any], ToolBody]] = {
    "test_simple_text": ("Returns one text item", NO_ARGUMENTS, simple_text),
    "test_image_content": ("Returns a PNG image", NO_ARGUMENTS, image_content),
    "test_audio_content": ("Returns a WAV clip", NO_ARGUMENTS, audio_content),
    "test_embedded_resource": ("Returns an embedded resource", NO_ARGUMENTS, embedded_resource),
    "test_multiple_content_types": (
        "Returns text, an image and a resource", NO_ARGUMENTS, multiple_content_types),
    "test_tool_with_logging": ("Sends three log messages", NO_ARGUMENTS, with_logging),
    "test_tool_with_progress": ("Reports progress 0, 50, 100", NO_ARGUMENTS, with_progress),
    "test_error_handling": ("Always fails", NO_ARGUMENTS, error_handling),
    "test_sampling": (
        "Asks the client's model", _string_argument("prompt", "The prompt to send"), sampling),
    "test_elicitation": (
        "Asks the user", _string_argument("message", "The message to show"), elicitation),
    "test_elicitation_sep1034_defaults": (
        "Asks the user, with defaults", NO_ARGUMENTS, elicitation_defaults),
    "test_elicitation_sep1330_enums": (
        "Asks the user to pick from enums", NO_ARGUMENTS, elicitation_enums),
    "json_schema_2020_12_tool": (
        "Tool with JSON Schema 2020-12 features", _ADDRESS_SCHEMA, json_schema_2020_12),
    "test_reconnection": ("Closes its SSE stream mid-call", NO_ARGUMENTS, reconnection),
}


def list_tools() -> list[types.Tool]:
    """Every tool, as ``tools/list`` shows it."""
    return [
        types.Tool(name=name, description=description, input_schema=schema)
        for name, (description, schema, _) in TOOLS.items()
    ]


async def call_tool(ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
    """Run a tool; its own failures become ``isError`` results, an unknown name a JSON-RPC error."""
    entry = TOOLS.get(params.name)
    if entry is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool `{params.name}`")
    try:
        content = await entry[2](ctx, dict(params.arguments or {}))
    except ToolFailedError as exc:
        return types.CallToolResult(content=[text(str(exc))], is_error=True)
    return types.CallToolResult(content=list(content))
