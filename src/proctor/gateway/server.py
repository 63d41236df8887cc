"""The agent-facing MCP server: the SDK's low-level ``Server`` with one handler per method,
each handing over to :class:`~proctor.gateway.core.Gateway`.

The transport decides who is asking: a :class:`Binder` turns the SDK's request
context into the gateway session and the credentials of this request (the stdio
wrapper has one of each; the HTTP gateway reads them from the request's headers),
and holds the session until the handler is done, so that it is not closed as idle
under a request.
Calls, reads, prompts, completions and (un)subscriptions are decided; listings are
limited to what the grant could be allowed; ``logging/setLevel`` is answered here.
Anything else gets the SDK's ``method not found``.

With OpenTelemetry on, a call's span joins the agent's trace: the ``traceparent``
of the request's ``_meta``, else (over HTTP) the request's ``traceparent`` header.
The SDK's own span per message is left out: proctor's is the call's server span.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import mcp_types as types
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from starlette.requests import Request

from proctor import telemetry
from proctor.gateway.core import Gateway
from proctor.gateway.relay import Relay
from proctor.gateway.rpc import internal_errors, rpc_error
from proctor.gateway.session import GatewaySession
from proctor.gateway.views import Credentials, View

__all__ = ["Binder", "build_server"]

Context = ServerRequestContext[Any, Any]


class Binder(Protocol):
    """Who is asking, for one request."""

    def bind(self, ctx: Context) -> AbstractAsyncContextManager[tuple[GatewaySession,
                                                                       Credentials]]:
        """The request's session and credentials; the session is held for the request
        (:meth:`GatewaySession.hold`) until the block ends."""
        ...


def _trace_carrier(ctx: Context, meta: Mapping[str, Any] | None
                   ) -> Mapping[str, Any] | None:
    """Where the call's trace context is: the request's ``_meta`` if it names a
    ``traceparent``, else the HTTP request's headers (nothing on stdio). Looked at only
    when telemetry is on."""
    if not telemetry.is_enabled() or (meta and "traceparent" in meta):
        return meta
    request = ctx.request
    if isinstance(request, Request) and "traceparent" in request.headers:
        return {name: request.headers[name] for name in ("traceparent", "tracestate")
                if name in request.headers}
    return meta


def build_server(gateway: Gateway, view: View, binder: Binder, *, name: str) -> Server[Any]:
    """An MCP server exposing ``view`` through ``gateway``."""

    async def list_tools(ctx: Context, params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        async with binder.bind(ctx) as (session, _):
            return types.ListToolsResult(tools=await gateway.list_tools(session, view))

    async def call_tool(ctx: Context, params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        async with binder.bind(ctx) as (session, creds):
            return await gateway.call_tool(session, creds, view, params.name,
                                           params.arguments or {}, Relay(ctx),
                                           meta=_trace_carrier(ctx, params.meta))

    async def list_prompts(ctx: Context, params: types.PaginatedRequestParams | None
                           ) -> types.ListPromptsResult:
        async with binder.bind(ctx) as (session, _):
            return types.ListPromptsResult(prompts=await gateway.list_prompts(session, view))

    async def get_prompt(ctx: Context, params: types.GetPromptRequestParams
                         ) -> types.GetPromptResult:
        async with binder.bind(ctx) as (session, creds):
            return await gateway.get_prompt(session, creds, view, params.name, params.arguments,
                                            Relay(ctx))

    async def list_resources(ctx: Context, params: types.PaginatedRequestParams | None
                             ) -> types.ListResourcesResult:
        async with binder.bind(ctx) as (session, _):
            resources, _templates = await gateway.list_resources(session, view)
            return types.ListResourcesResult(resources=resources)

    async def list_templates(ctx: Context, params: types.PaginatedRequestParams | None
                             ) -> types.ListResourceTemplatesResult:
        async with binder.bind(ctx) as (session, _):
            _resources, templates = await gateway.list_resources(session, view)
            return types.ListResourceTemplatesResult(resource_templates=templates)

    async def read_resource(ctx: Context, params: types.ReadResourceRequestParams
                            ) -> types.ReadResourceResult:
        async with binder.bind(ctx) as (session, creds):
            uri = str(params.uri)
            server = await gateway.resource_server(session, view, uri, creds)
            if server is None:
                raise rpc_error("resource_unknown",
                                f"resource `{uri[:200]}` is not known here: list the resources "
                                "first, or use its server's endpoint")
            return await gateway.read_resource(session, creds, server, uri, Relay(ctx))

    async def subscribe(ctx: Context, params: types.SubscribeRequestParams) -> types.EmptyResult:
        async with binder.bind(ctx) as (session, creds):
            await gateway.subscribe(session, creds, view, str(params.uri), on=True,
                                    relay=Relay(ctx))
            return types.EmptyResult()

    async def unsubscribe(ctx: Context, params: types.UnsubscribeRequestParams
                          ) -> types.EmptyResult:
        async with binder.bind(ctx) as (session, creds):
            await gateway.subscribe(session, creds, view, str(params.uri), on=False,
                                    relay=Relay(ctx))
            return types.EmptyResult()

    async def complete(ctx: Context, params: types.CompleteRequestParams
                       ) -> types.CompleteResult:
        async with binder.bind(ctx) as (session, creds):
            return await gateway.complete(session, creds, view, params, Relay(ctx))

    async def set_level(ctx: Context, params: types.SetLevelRequestParams) -> types.EmptyResult:
        # Answered here: the level filters what the gateway relays of the upstreams' logs.
        async with binder.bind(ctx) as (session, _):
            if session.relay is not None:
                session.relay.log_level = params.level
            return types.EmptyResult()

    server: Server[Any] = Server(
        name, version="proctor-gateway",
        instructions="Every call passes proctor's policy decision and is audited.",
        on_list_tools=_guarded("tools/list", list_tools),
        on_call_tool=_guarded("tools/call", call_tool),
        on_list_prompts=_guarded("prompts/list", list_prompts),
        on_get_prompt=_guarded("prompts/get", get_prompt),
        on_list_resources=_guarded("resources/list", list_resources),
        on_list_resource_templates=_guarded("resources/templates/list", list_templates),
        on_read_resource=_guarded("resources/read", read_resource),
        on_subscribe_resource=_guarded("resources/subscribe", subscribe),
        on_unsubscribe_resource=_guarded("resources/unsubscribe", unsubscribe),
        on_completion=_guarded("completion/complete", complete),
    )
    # The SDK's own span per message goes: a call's span is proctor's (above), and with
    # OpenTelemetry off a no-op span per message is still work on every call.
    server.middleware = [m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    # Registered apart: the constructor warns that logging is deprecated (SEP-2577),
    # while clients of the 2025 protocol still set a level.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams,
                               _guarded("logging/setLevel", set_level))
    return server


_Params = TypeVar("_Params")
_Result = TypeVar("_Result")


def _guarded(method: str, handler: Callable[[Context, _Params], Awaitable[_Result]]
             ) -> Callable[[Context, _Params], Awaitable[_Result]]:
    """``handler`` answering what it raises as :func:`internal_errors` says."""
    async def guarded(ctx: Context, params: _Params) -> _Result:
        with internal_errors(method):
            return await handler(ctx, params)
    return guarded

