"""A conformant MCP server for the conformance suite, on the official ``mcp`` SDK.

It serves streamable HTTP at ``/mcp`` and implements what the server scenarios of
``@modelcontextprotocol/conformance`` call: the tools in
:mod:`tests.conformance.upstream_tools`, static and templated resources,
subscriptions, prompts, completion, logging, and resumable SSE streams (an
in-memory event store). It is built on the low-level ``Server``, the same layer
the gateway uses, so nothing is added or hidden by a framework.

Run it::

    uv run python -m tests.conformance.upstream [--port N]

It binds 127.0.0.1 (port 0 picks a free one), then prints its URL as the first
line on stdout, so a test can start it without guessing a port.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import mcp.types as types
import uvicorn
from mcp.server import Server
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError

from tests.conformance import upstream_tools
from tests.conformance.upstream_tools import Context, embedded, image, text

TEMPLATE = "test://template/{id}/data"
WAIT = 5  # seconds: the longest a stream still open at the end is waited for
_TEMPLATE_URI = re.compile(r"test://template/(?P<id>[^/]+)/data")
STATIC_TEXT = "This is the content of the static text resource."
RESOURCES = [
    types.Resource(uri="test://static-text", name="static-text", mime_type="text/plain",
                   description="A static text resource"),
    types.Resource(uri="test://static-binary", name="static-binary", mime_type="image/png",
                   description="A static binary resource (a PNG image)"),
    types.Resource(uri="test://watched-resource", name="watched-resource",
                   mime_type="text/plain", description="A resource that can be subscribed to"),
]


class MemoryEventStore(EventStore):
    """Keeps the last ``capacity`` SSE events so a client can resume with Last-Event-ID."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._events: deque[tuple[str, int, types.JSONRPCMessage | None]] = deque(maxlen=capacity)
        self._next_id = 0

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        self._next_id += 1
        self._events.append((stream_id, self._next_id, message))
        return str(self._next_id)

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        last = int(last_event_id) if last_event_id.isdigit() else -1
        stream = next((s for s, i, _ in self._events if i == last), None)
        if stream is None:
            return None
        for stream_id, event_id, message in list(self._events):
            if stream_id == stream and event_id > last and message is not None:
                await send_callback(EventMessage(message, str(event_id)))
        return stream


async def _list_resources(ctx: Context, params: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=RESOURCES)


async def _list_templates(ctx: Context, params: Any) -> types.ListResourceTemplatesResult:
    template = types.ResourceTemplate(uri_template=TEMPLATE, name="template",
                                      mime_type="application/json",
                                      description="Data for any id")
    return types.ListResourceTemplatesResult(resource_templates=[template])


async def _read_resource(
    ctx: Context, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    uri = str(params.uri)
    contents: types.TextResourceContents | types.BlobResourceContents
    if uri == "test://static-text":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text=STATIC_TEXT)
    elif uri == "test://static-binary":
        blob = upstream_tools.PNG_BASE64
        contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=blob)
    elif uri == "test://watched-resource":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="watched")
    elif match := _TEMPLATE_URI.fullmatch(uri):
        data = {"id": match["id"], "templateTest": True, "data": f"Data for ID: {match['id']}"}
        contents = types.TextResourceContents(
            uri=uri, mime_type="application/json", text=json.dumps(data))
    else:
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown resource `{uri}`")
    return types.ReadResourceResult(contents=[contents])


async def _subscribe(ctx: Context, params: types.SubscribeRequestParams) -> types.EmptyResult:
    if str(params.uri) not in {r.uri for r in RESOURCES}:
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown resource `{params.uri}`")
    return types.EmptyResult()


async def _unsubscribe(ctx: Context, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


def _prompt(name: str, description: str, *arguments: str) -> types.Prompt:
    args = [types.PromptArgument(name=a, description=f"the {a}", required=True) for a in arguments]
    return types.Prompt(name=name, description=description, arguments=args or None)


PROMPTS = [
    _prompt("test_simple_prompt", "A prompt without arguments"),
    _prompt("test_prompt_with_arguments", "A prompt with two arguments", "arg1", "arg2"),
    _prompt("test_prompt_with_embedded_resource", "A prompt embedding a resource", "resourceUri"),
    _prompt("test_prompt_with_image", "A prompt with an image"),
]


async def _list_prompts(ctx: Context, params: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=PROMPTS)


async def _get_prompt(ctx: Context, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    args = params.arguments or {}
    prompt = next((p for p in PROMPTS if p.name == params.name), None)
    if prompt is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"unknown prompt `{params.name}`")
    missing = [a.name for a in prompt.arguments or [] if a.name not in args]
    if missing:
        raise MCPError(code=types.INVALID_PARAMS, message=f"missing argument `{missing[0]}`")
    contents: list[Any]
    if params.name == "test_simple_prompt":
        contents = [text("This is a simple prompt for testing.")]
    elif params.name == "test_prompt_with_arguments":
        contents = [text(f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'")]
    elif params.name == "test_prompt_with_embedded_resource":
        contents = [embedded(args["resourceUri"], "text/plain", "Embedded resource content."),
                    text("Please process the embedded resource above.")]
    else:
        contents = [image(), text("Please describe the image above.")]
    messages = [types.PromptMessage(role="user", content=c) for c in contents]
    return types.GetPromptResult(messages=messages)


async def _complete(ctx: Context, params: types.CompleteRequestParams) -> types.CompleteResult:
    known = ["paris", "park", "party", "testing", "test value"]
    values = [v for v in known if v.startswith(params.argument.value)]
    return types.CompleteResult(
        completion=types.Completion(values=values, total=len(values), has_more=False))


async def _set_level(ctx: Context, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


async def _list_tools(ctx: Context, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=upstream_tools.list_tools())


def build_server() -> Server[Any]:
    """The conformance upstream as a low-level MCP server."""
    server: Server[Any] = Server(
        "proctor-conformance-upstream",
        version="1.0.0",
        on_list_tools=_list_tools,
        on_call_tool=upstream_tools.call_tool,
        on_list_resources=_list_resources,
        on_list_resource_templates=_list_templates,
        on_read_resource=_read_resource,
        on_subscribe_resource=_subscribe,
        on_unsubscribe_resource=_unsubscribe,
        on_list_prompts=_list_prompts,
        on_get_prompt=_get_prompt,
        on_completion=_complete,
    )
    # Registered by method name: the constructor argument for it warns that logging
    # is deprecated from protocol 2026-07-28, but the suite checks it at 2025-11-25.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, _set_level)
    return server


def _server() -> uvicorn.Server:
    app = build_server().streamable_http_app(
        event_store=MemoryEventStore(), retry_interval=100, host="127.0.0.1")
    # a stream still open at the end is cut after a bounded wait
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                         timeout_graceful_shutdown=WAIT))


async def serve(sock: socket.socket) -> None:
    """Serve streamable HTTP at ``/mcp`` on an already bound socket until cancelled."""
    await _server().serve(sockets=[sock])


def _listening(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)  # connections wait in the backlog until uvicorn serves them
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"


@contextmanager
def served_in_thread() -> Iterator[str]:
    """The upstream on a free port, served by uvicorn on a thread of this process (its own
    event loop); yields its URL; stops it (open streams cut after a bounded wait)."""
    sock = _listening(0)
    server = _server()
    thread = threading.Thread(target=anyio.run, args=(server.serve, [sock]),
                              name="conformance-upstream", daemon=True)
    thread.start()
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=2 * WAIT)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    sock = _listening(parser.parse_args(argv).port)
    sys.stdout.write(url_of(sock) + "\n")
    sys.stdout.flush()
    anyio.run(serve, sock)


if __name__ == "__main__":
    main()
