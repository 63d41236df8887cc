"""One connection to an upstream MCP server: a ``ClientSession`` over stdio or streamable HTTP.

The connection lives in its own task (the SDK's transports are context managers
that must be entered and left by one task). :meth:`UpstreamConnection.serve`
connects, initializes, lists the tools, reports ready, and holds the connection
until :meth:`close`. Every request is bounded by the call timeout; a crashed
server fails the calls in flight with ``upstream_unavailable`` and a hung one
with ``upstream_timeout``. Errors of the SDK are translated here, so callers see
:class:`~proctor.errors.GatewayError` codes only.

A ``tools/call`` of a tool listed to a server that
negotiated a 2025 protocol version goes around the ``ClientSession``: its request is
written and its answer read by :class:`~proctor.gateway.pipes.UpstreamPipes` (stdio)
or posted by :class:`~proctor.gateway.posts.UpstreamPosts` (streamable HTTP, beside
the SDK's transport on the same client), and the result is
checked as the SDK's session checks it: against the negotiated version's result
shape (fields of later revisions dropped), then parsed into ``CallToolResult``, and
its structured content against the tool's ``outputSchema`` (a validator compiled
once per schema). When the agent's side is direct too
(:meth:`UpstreamConnection.call_tool_answer`), no ``CallToolResult`` is made: the
answer is the dict its version's result shape dumps (:mod:`proctor.gateway.shaped`).
The session still serves everything else on the same pipes.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TextIO, TypeVar, cast

import anyio
import httpx2
import mcp_types as types
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, StdioServerParameters
from mcp.client.session import _later_revision_fields
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR, PARSE_ERROR, REQUEST_TIMEOUT
from mcp_types import methods as surfaces
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from proctor.errors import GatewayError
from proctor.gateway.config import UpstreamConfig
from proctor.gateway.keepalive import ENCODED, keepalive_client
from proctor.gateway.pipes import DEFAULT_MAX_ANSWER_BYTES, UpstreamPipes, too_large
from proctor.gateway.posts import UpstreamPosts
from proctor.gateway.relay import RelayBoard
from proctor.gateway.shaped import ShapedAnswer
from proctor.gateway.stderr import StderrRedaction

__all__ = ["MAX_HANDLING", "UpstreamConnection"]

log = logging.getLogger(__name__)

_MAX_LIST_PAGES = 50
MAX_HANDLING = 64
"""How many of an upstream's notifications and requests the gateway hands on at once (to
the agent, which may be slow): the SDK's session handles each in a task of its own."""
_UNPARSED = "Failed to parse JSON response: "  # the SDK transport's words for a body
_EVENTS_FAILED = "SSE stream failed: "  # and for an event stream's reader's error
_T = TypeVar("_T")
_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])
Streams = AbstractAsyncContextManager[Any]


class UpstreamConnection:
    """A live connection to one upstream, with the tools it listed on connect."""

    def __init__(self, config: UpstreamConfig, *, env: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 20.0,
                 call_timeout: float = 30.0, errlog: TextIO | None = None,
                 relay: RelayBoard | None = None,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
                 stderr: StderrRedaction | None = None) -> None:
        self.config = config
        self._stderr = stderr  # a stdio server's stderr lines, redacted so
        self._max_answer = max_answer_bytes
        self.name = config.name
        self._env = dict(env or {})
        self._headers = dict(headers or {})
        self._connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self._errlog = errlog or sys.stderr
        self._relay = relay
        self._session: ClientSession | None = None
        self._pipes: UpstreamPipes | None = None
        self._posts: UpstreamPosts | None = None
        self._version: str | None = None  # the protocol version the server negotiated
        self._schemas = _OutputSchemas()
        self._handling = _Handling(self.name)
        self._stop = anyio.Event()
        self.closed = anyio.Event()
        self.tools: list[types.Tool] = []
        self.capabilities: types.ServerCapabilities | None = None

    # lifecycle

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect and hold the connection until :meth:`close`; use with ``TaskGroup.start``.

        Raises :class:`GatewayError` ``upstream_unavailable`` if it cannot connect.
        """
        started = False
        try:
            # No session-wide read timeout: starting a server may take longer than a call.
            async with self._streams() as (read, write), self._client(read, write) as session:
                with anyio.fail_after(self._connect_timeout):
                    result = await session.initialize()
                    self.capabilities = result.capabilities
                    self._version = result.protocol_version
                    if self._pipes is not None:
                        self._pipes.version = result.protocol_version
                    if self._posts is not None:
                        self._posts.version = result.protocol_version
                    self.tools = await self._list_tools(session)
                self._session = session
                started = True
                task_status.started()
                await self._stop.wait()
        except BaseException as exc:
            if started or isinstance(exc, anyio.get_cancelled_exc_class()):
                if not isinstance(exc, Exception | BaseExceptionGroup):
                    raise
                log.warning("upstream `%s` connection ended: %s", self.name, _describe(exc))
            else:
                raise GatewayError("upstream_unavailable", f"upstream `{self.name}` cannot be "
                                   f"reached: {_describe(exc)}") from None
        finally:
            self._session = None
            self.closed.set()

    def close(self) -> None:
        """Ask the connection to end; calls still in flight fail."""
        self._stop.set()

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._stop.is_set()

    def _client(self, read: Any, write: Any) -> ClientSession:
        relay = self._relay
        if relay is None:
            return _Session(read, write, schemas=self._schemas, relist=self._list_tools)
        # The upstream may sample and elicit through the agent: relayed, guarded. The
        # session handles each message in a task of its own: MAX_HANDLING at once.
        gated, busy = self._handling.gated, self._handling.busy
        return _Session(read, write, schemas=self._schemas, relist=self._list_tools,
                        sampling_callback=gated(relay.sampling_for(self.name), busy),
                        elicitation_callback=gated(relay.elicitation_for(self.name), busy),
                        logging_callback=gated(relay.logging_for(self.name)),
                        message_handler=cast(Any, gated(relay.messages_from(self.name))))

    def _on_log(self) -> Callable[[Any], Awaitable[None]] | None:
        if self._relay is None:
            return None
        return self._handling.gated(self._relay.logging_for(self.name))

    def _streams(self) -> Streams:
        if self.config.url is not None:
            return self._http_streams(self.config.url)
        command = self.config.command
        if not command:
            raise GatewayError("upstream_unavailable",
                               f"upstream `{self.name}` has no command to run")
        params = StdioServerParameters(command=command[0], args=list(command[1:]),
                                       env=self._env, cwd=self.config.cwd)
        self._pipes = UpstreamPipes(params, errlog=self._errlog,
                                    max_answer_bytes=self._max_answer, on_log=self._on_log(),
                                    redaction=self._stderr)
        return self._pipes.open()

    @asynccontextmanager
    async def _http_streams(self, url: str) -> AsyncIterator[Any]:
        """The SDK's streamable HTTP transport, and beside it :class:`UpstreamPosts` on
        the same client: the transport's messages reach the session through a stream
        the posts may also hand a call's other messages to."""
        timeout = self.call_timeout
        client = keepalive_client(dict(self._headers),
                                  httpx2.Timeout(timeout, read=max(timeout, 300.0)),
                                  max_answer_bytes=self._max_answer)
        to_session, from_posts = anyio.create_memory_object_stream[Any](0)
        posts = UpstreamPosts(client, url, to_session, max_answer_bytes=self._max_answer,
                              on_log=self._on_log())
        client.event_hooks = {"request": [], "response": [posts.note_response]}
        async with client, streamable_http_client(
                url, http_client=client, max_sse_event_size=self._max_answer) as (read, write), \
                from_posts, anyio.create_task_group() as tasks:
            posts.later = tasks.start_soon
            tasks.start_soon(_pass_on, read, to_session, posts)
            self._posts = posts
            try:
                yield from_posts, write
            finally:
                self._posts = None
                posts.later = None  # the tasks end here: a late answer's stream closes inline
                tasks.cancel_scope.cancel()

    async def _list_tools(self, session: ClientSession) -> list[types.Tool]:
        if self.capabilities is not None and self.capabilities.tools is None:
            return []
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor)
                                            if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._schemas.update(tools, complete=not cursor)
        return tools

    # requests

    async def list_tools(self) -> list[types.Tool]:
        """The server's tools as it lists them now (they may have changed since connect)."""
        tools = await self._request(self._list_tools)
        self.tools = tools
        return tools

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *,
                        progress: ProgressFnT | None = None,
                        meta: Mapping[str, str] | None = None) -> types.CallToolResult:
        """``meta``: what goes in the request's ``_meta`` (a ``traceparent``)."""
        result = await self._call_tool(name, arguments, progress, meta, document=False)
        assert isinstance(result, types.CallToolResult)
        return result

    async def call_tool_answer(self, name: str, arguments: Mapping[str, Any], *,
                               progress: ProgressFnT | None = None,
                               meta: Mapping[str, str] | None = None
                               ) -> types.CallToolResult | ShapedAnswer:
        """As :meth:`call_tool`, but a direct call's answer stays the dict it was parsed
        into, in the negotiated version's shape (:mod:`proctor.gateway.shaped`)."""
        return await self._call_tool(name, arguments, progress, meta, document=True)

    async def _call_tool(self, name: str, arguments: Mapping[str, Any],
                         progress: ProgressFnT | None, meta: Mapping[str, str] | None, *,
                         document: bool) -> types.CallToolResult | ShapedAnswer:
        direct, version = self._pipes or self._posts, self._version
        gated = None if progress is None else self._handling.gated(progress)
        # A log message or the call's progress is relayed by the pipes or the posts
        # themselves, in order, before the answer (the SDK's session would relay each in
        # a task of its own).
        if (direct is not None and version is not None
                and version not in MODERN_PROTOCOL_VERSIONS and self._schemas.knows(name)):
            params: dict[str, Any] = {"name": name, "arguments": dict(arguments)}
            if meta:
                params["_meta"] = dict(meta)
            negotiated = version

            async def call(_: ClientSession) -> types.CallToolResult | ShapedAnswer:
                raw = await direct.request("tools/call", params, on_progress=gated)
                if document:
                    return ShapedAnswer(self._schemas.shaped(name, negotiated, raw), negotiated)
                return self._schemas.checked(name, negotiated, raw)

            return await self._request(call)
        sent_meta: Any = dict(meta) if meta else None
        return await self._request(lambda s: s.call_tool(
            name, dict(arguments), read_timeout_seconds=self.call_timeout,
            progress_callback=gated, meta=sent_meta))

    async def complete(self, ref: types.ResourceTemplateReference | types.PromptReference,
                       argument: dict[str, str], context: dict[str, str] | None
                       ) -> types.CompleteResult:
        return await self._request(lambda s: s.complete(ref, argument, context))

    async def subscribe(self, uri: str, *, on: bool) -> None:
        request: Any = (types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
                        if on else types.UnsubscribeRequest(
                            params=types.UnsubscribeRequestParams(uri=uri)))
        await self._request(lambda s: s.send_request(request, types.EmptyResult))

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        async def read(session: ClientSession) -> types.ReadResourceResult:
            result = await session.read_resource(uri)
            assert isinstance(result, types.ReadResourceResult)  # input_required raises
            return result
        return await self._request(read)

    async def get_prompt(self, name: str, arguments: Mapping[str, str] | None
                         ) -> types.GetPromptResult:
        async def get(session: ClientSession) -> types.GetPromptResult:
            result = await session.get_prompt(name, dict(arguments) if arguments else None)
            assert isinstance(result, types.GetPromptResult)
            return result
        return await self._request(get)

    async def list_resources(self) -> list[types.Resource]:
        if self.capabilities is None or self.capabilities.resources is None:
            return []
        result = await self._request(lambda s: s.list_resources())
        return list(result.resources)

    async def list_resource_templates(self) -> list[types.ResourceTemplate]:
        if self.capabilities is None or self.capabilities.resources is None:
            return []
        result = await self._request(lambda s: s.list_resource_templates())
        return list(result.resource_templates)

    async def list_prompts(self) -> list[types.Prompt]:
        if self.capabilities is None or self.capabilities.prompts is None:
            return []
        result = await self._request(lambda s: s.list_prompts())
        return list(result.prompts)

    async def _request(self, send: Callable[[ClientSession], Awaitable[_T]]) -> _T:
        session = self._session
        if session is None or self._stop.is_set():
            raise GatewayError("upstream_unavailable", f"upstream `{self.name}` is not connected")
        try:
            # Leaving this scope cancels the request: the SDK tells the upstream so.
            with anyio.fail_after(self.call_timeout):
                return await send(session)
        except TimeoutError:
            raise _timeout(self.name, self.call_timeout) from None
        except GatewayError:
            pipes = self._pipes
            if pipes is not None and pipes.broken:
                self.close()  # a line over the cap: the next use connects again
            raise
        except MCPError as exc:
            refused = self._refused(exc)
            if refused is not None:
                raise refused from None
            if exc.code == REQUEST_TIMEOUT and exc.message.endswith(" timed out"):
                # the SDK's own read timeout; an upstream's -32001 is its own error
                raise _timeout(self.name, self.call_timeout) from None
            if exc.code == CONNECTION_CLOSED:
                self.close()  # the next use connects again
                raise GatewayError("upstream_unavailable",
                                   f"upstream `{self.name}` closed the connection") from None
            raise
        except (RuntimeError, ValueError) as exc:  # an answer the SDK could not accept
            raise GatewayError("upstream_invalid_result", f"upstream `{self.name}` answered "
                               f"with something the gateway cannot relay: "
                               f"{type(exc).__name__}") from None


    def _refused(self, exc: MCPError) -> GatewayError | None:
        """The gateway's own refusal of an answer the SDK's transport was reading, as
        that transport words it: a body over the cap or encoded (the client's
        transport stopped it: a parse error carrying its text), an event over the cap
        or an event stream encoded (the SDK's request ends, its connection serves
        on); else None."""
        if exc.code == PARSE_ERROR and exc.message.startswith(_UNPARSED):
            for error in (too_large(self._max_answer), ENCODED):
                if exc.message == _UNPARSED + error.message:
                    return error
        elif exc.code == CONNECTION_CLOSED and exc.message == (
                f"{_EVENTS_FAILED}Server-sent event exceeded the {self._max_answer} "
                "byte limit."):
            return too_large(self._max_answer)
        elif exc.code == CONNECTION_CLOSED and exc.message == _EVENTS_FAILED + ENCODED.message:
            return ENCODED
        return None


class _OutputSchemas:
    """The tools' output schemas as last listed, each compiled into a validator once."""

    def __init__(self) -> None:
        self._schemas: dict[str, dict[str, Any] | None] = {}
        self._validators: dict[str, Any] = {}

    def update(self, tools: list[types.Tool], *, complete: bool) -> None:
        """Take a listing; a ``complete`` one (every page read) is the server's whole set
        of tools, and a tool it no longer lists is forgotten (as the SDK's session does):
        a call to it takes the SDK's path, which lists the tools again."""
        if complete:
            names = {tool.name for tool in tools}
            self._schemas = {k: v for k, v in self._schemas.items() if k in names}
            self._validators = {k: v for k, v in self._validators.items() if k in names}
        for tool in tools:
            if tool.name in self._validators and _canonical(
                    self._schemas.get(tool.name)) != _canonical(tool.output_schema):
                del self._validators[tool.name]
            self._schemas[tool.name] = tool.output_schema

    def knows(self, name: str) -> bool:
        """Whether ``name`` was listed (else the SDK's session lists the tools again)."""
        return name in self._schemas

    def checked(self, name: str, version: str, raw: dict[str, Any]) -> types.CallToolResult:
        """``raw`` as the SDK's session accepts a ``tools/call`` result: the negotiated
        version's shape, later revisions' fields dropped, its structured content
        valid against the tool's output schema. Raises ``ValueError`` (pydantic's
        ``ValidationError``) or ``RuntimeError``, as the session does."""
        surfaces.validate_server_result("tools/call", version, raw)
        raw = _earlier(version, raw)
        result = types.CallToolResult.model_validate(raw, by_name=False)
        self._check_structured(name, result.is_error, raw)
        return result

    def shaped(self, name: str, version: str, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` checked as :meth:`checked` checks it, as the negotiated version's
        result shape dumps it (fields that version does not have dropped, ``None``
        left out): a plain dict, no ``CallToolResult`` made of it."""
        raw = _earlier(version, raw)
        if not isinstance(raw.get("isError", False), bool):
            # the version's shape takes null there, the SDK's model not (and it words why)
            types.CallToolResult.model_validate(raw, by_name=False)
        shaped: dict[str, Any] = surfaces.serialize_server_result("tools/call", version, raw)
        # as ``CallToolResult`` has it (its default), and so writes it on to the agent
        is_error = shaped.setdefault("isError", False)
        self._check_structured(name, is_error, raw)
        return shaped

    def check_result(self, name: str, result: types.CallToolResult) -> None:
        """The structured content of ``result`` (not in error) against the tool's output
        schema, as :meth:`checked` checks a direct answer's."""
        given = result.structured_content is not None or (
            "structured_content" in result.model_fields_set)
        self._check(name, result.is_error, given, result.structured_content)

    def _check_structured(self, name: str, is_error: bool | None, raw: dict[str, Any]) -> None:
        self._check(name, is_error, "structuredContent" in raw, raw.get("structuredContent"))

    def _check(self, name: str, is_error: bool | None, given: bool, structured: Any) -> None:
        """``structured`` (``given``: the result has it) against the tool's output
        schema, as the SDK's session checks it, in the work budget of the gateway's
        checks (:mod:`proctor.gateway.schemas`)."""
        schema = self._schemas.get(name)
        if is_error or schema is None:
            return
        if not given:
            raise RuntimeError(f"tool {name} has an output schema but returned no "
                               "structured content")
        from jsonschema.exceptions import best_match
        from referencing.exceptions import Unresolvable

        from proctor.gateway.schemas import SchemaRefusedError

        try:
            errors = self._validator(name, schema).iter_errors(structured)
            error = best_match(errors)  # type: ignore[no-untyped-call]
        except Unresolvable:
            raise RuntimeError(f"the output schema of tool {name} is invalid") from None
        except SchemaRefusedError as exc:
            log.warning("the output schema of tool %r is over its work budget on an answer",
                        name[:128])
            raise GatewayError("upstream_invalid_result", f"the output schema of tool "
                               f"`{name[:128]}` is not evaluated: {exc.message}") from None
        if error is not None:
            raise RuntimeError(f"tool {name} returned structured content its output "
                               "schema does not allow")

    def _validator(self, name: str, schema: dict[str, Any]) -> Any:
        validator = self._validators.get(name)
        if validator is None:
            validator = self._validators[name] = _output_validator(name, schema)
        return validator


def _output_validator(name: str, schema: dict[str, Any]) -> Any:
    """A validator of tool ``name``'s output schema as the gateway makes every validator of
    an upstream's schema (:mod:`proctor.gateway.schemas`: `$ref`s within the schema only,
    patterns matched by RE2, a work budget per check); a schema it refuses is invalid,
    as the SDK words it."""
    from jsonschema import SchemaError

    from proctor.gateway.schemas import SchemaRefusedError, safe_validator

    try:
        return safe_validator(schema)
    except (SchemaError, SchemaRefusedError):
        raise RuntimeError(f"the output schema of tool {name} is invalid") from None


class _Session(ClientSession):
    """The SDK's session, but a tool's structured content is checked as the direct path
    checks it (:meth:`_OutputSchemas.check_result`, on the connection's listings): the
    SDK's validator matches patterns with ``re``, which backtracks (an upstream's pattern
    and structured content could hold the event loop for hours), and has no work
    budget. ``validate_tool_result`` is the session's public hook, which its
    ``call_tool`` awaits for every result not in error."""

    def __init__(self, *args: Any, schemas: _OutputSchemas,
                 relist: Callable[[ClientSession], Awaitable[Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schemas = schemas
        self._relist = relist

    async def validate_tool_result(self, name: str, result: types.CallToolResult) -> None:
        if not self._schemas.knows(name):
            await self._relist(self)  # as the SDK's session lists them again
        self._schemas.check_result(name, result)


def _earlier(version: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the fields of revisions later than ``version`` (as the SDK's
    session drops them)."""
    later = _later_revision_fields("tools/call", version)
    if not later.isdisjoint(raw):
        return {key: value for key, value in raw.items() if key not in later}
    return raw


def _canonical(schema: dict[str, Any] | None) -> str:
    """JSON equality (Python's `==` takes `True` for `1`), as the SDK compares schemas."""
    return json.dumps(schema, sort_keys=True)


def _timeout(name: str, seconds: float) -> GatewayError:
    return GatewayError("upstream_timeout", f"upstream `{name}` did not answer within "
                        f"{seconds:g} s")


class _Handling:
    """An upstream's notifications and requests being handed on (to the agent, which may
    be slow to take them): the SDK's session starts a task for each as it reads it, so a
    flood would hold tasks without end. At most :data:`MAX_HANDLING` at once; past that
    a notification is dropped and a request answered an error, logged (without their
    contents) once per flood."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._count = 0
        self._dropping = False
        self.busy = types.ErrorData(code=INTERNAL_ERROR, message=(
            f"the gateway is handing on {MAX_HANDLING} of this server's messages already"))

    def gated(self, handle: _Handler, refused: Any = None) -> _Handler:
        """``handle``, or ``refused`` while :data:`MAX_HANDLING` are being handled."""
        async def gated(*args: Any) -> Any:
            if self._count >= MAX_HANDLING:
                if not self._dropping:
                    self._dropping = True
                    log.warning("upstream `%s` sends messages faster than the agent takes "
                                "them: some are dropped", self._upstream)
                return refused
            self._count += 1
            try:
                return await handle(*args)
            finally:
                self._count -= 1
                if self._count == 0:
                    self._dropping = False
        return cast(_Handler, gated)


async def _pass_on(read: Any, to_session: MemoryObjectSendStream[Any],
                   posts: UpstreamPosts) -> None:
    """The SDK's transport's messages to its session, but for a posted call's progress
    (on the upstream's GET stream), which the posts relay."""
    async with to_session:
        async for message in read:
            if not await posts.relayed_progress(message):
                await to_session.send(message)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description: the exception types, never their text (an
    upstream's error text could quote its credentials)."""
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(sorted({_describe(e) for e in exc.exceptions}))
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__
