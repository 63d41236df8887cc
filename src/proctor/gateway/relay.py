"""What an upstream sends back during a call, relayed to the agent who made it.

While a call is in flight an upstream may report progress, log, ask the agent's
client to sample its model (``sampling/createMessage``) or to ask its user
(``elicitation/create``). Each is relayed on the agent's request that the call
serves, so it reaches the agent on the same stream (stdio, or the call's SSE
stream over HTTP), and it passes the output guard first: an upstream cannot
smuggle a credential into the agent's context through a prompt, a question or a
log line. What the agent answers goes back to the upstream only if it carries
no proctor grant (a grant in it is revoked, as for arguments).

MCP does not say which call an upstream request belongs to (JSON-RPC has no
field for it), and a session's calls share one upstream connection: a request is
relayed to the newest call in flight on the session, which is exact when the
agent makes one call at a time. With none in flight it is refused. A relayed request
waits for the agent's answer ``answer_timeout`` seconds at most (the gateway's
``relay_timeout_seconds``), however long the upstream would wait: then the upstream
is answered ``-32001`` (request timeout) and the agent's request is cancelled.

``resources/updated`` notifications go to the agent connections that subscribed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INVALID_REQUEST, REQUEST_TIMEOUT

from proctor.errors import ProctorError

__all__ = ["Relay", "RelayBoard"]

log = logging.getLogger(__name__)

DEFAULT_ANSWER_TIMEOUT = 60.0  # as the gateway config's ``relay_timeout_seconds``
_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
Redact = Callable[[Any], Awaitable[Any]]  # a model as the agent may see it
CheckLeak = Callable[[dict[str, Any]], Awaitable[None]]  # raises if a grant is in it
RedactText = Callable[[str], str]


class Relay:
    """The agent's side of one call: its request's stream back to the agent."""

    def __init__(self, ctx: ServerRequestContext[Any, Any]) -> None:
        self._ctx = ctx
        meta: Mapping[str, Any] = ctx.meta or {}
        # the SDK's typed dict names it in Python; a raw one as on the wire
        self.progress_token = meta.get("progress_token", meta.get("progressToken"))

    async def request(self, request: Any, result_type: type[Any]) -> Any:
        metadata = ServerMessageMetadata(related_request_id=self._ctx.request_id)
        return await self._ctx.session.send_request(request, result_type, metadata=metadata)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        # The SDK's own sender applies each protocol era's delivery rules; the method is
        # deprecated for servers that originate logs, which a relay does not.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await self._ctx.session.send_log_message(
                params.level, params.data, params.logger, related_request_id=self._ctx.request_id)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self._ctx.session.report_progress(progress, total, message)

    @property
    def session(self) -> ServerSession:
        return self._ctx.session


class RelayBoard:
    """Per gateway session: the calls in flight, the log level, the subscriptions."""

    def __init__(self, redact: Redact, check_leak: CheckLeak, redact_text: RedactText, *,
                 answer_timeout: float = DEFAULT_ANSWER_TIMEOUT) -> None:
        self._answer_timeout = answer_timeout
        self._redact = redact
        self._check_leak = check_leak
        self._redact_text = redact_text
        self._active: list[Relay] = []
        self.log_level: str = "info"
        self._subscribers: dict[str, list[ServerSession]] = {}

    @contextmanager
    def during(self, relay: Relay | None) -> Iterator[None]:
        if relay is None:
            yield
            return
        self._active.append(relay)
        try:
            yield
        finally:
            self._active.remove(relay)

    def subscribe(self, uri: str, session: ServerSession) -> None:
        self._subscribers.setdefault(uri, []).append(session)

    def unsubscribe(self, uri: str, session: ServerSession) -> None:
        sessions = self._subscribers.get(uri, [])
        if session in sessions:
            sessions.remove(session)

    # the upstream connection's callbacks

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams
                       ) -> types.CreateMessageResult | types.ErrorData:
        try:
            redacted = await self._redact(params)
        except MCPError as exc:  # the output guard cannot read it through
            return exc.error
        answer: types.CreateMessageResult | types.ErrorData = await self._ask(
            types.CreateMessageRequest(params=redacted), types.CreateMessageResult)
        return answer

    async def elicitation(self, context: Any, params: types.ElicitRequestParams
                          ) -> types.ElicitResult | types.ErrorData:
        try:
            redacted = await self._redact(params)
        except MCPError as exc:
            return exc.error
        answer: types.ElicitResult | types.ErrorData = await self._ask(
            types.ElicitRequest(params=redacted), types.ElicitResult)
        return answer

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        relay = self._current()
        if relay is None or _rank(params.level) < _rank(self.log_level):
            return
        try:
            redacted = await self._redact(params)
        except MCPError:
            log.warning("an upstream log message the output guard cannot read was dropped")
            return
        await relay.log(redacted)

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            uri = str(message.params.uri)
            for session in list(self._subscribers.get(uri, [])):
                try:
                    await session.send_resource_updated(uri)
                except Exception as exc:  # that agent is gone; the others still hear
                    log.debug("resource update not relayed: %s", type(exc).__name__)

    async def _ask(self, request: Any, result_type: type[Any]) -> Any:
        relay = self._current()
        if relay is None:
            return types.ErrorData(code=INVALID_REQUEST, message="no call is in flight to "
                                   "relay this request to")
        try:
            with anyio.move_on_after(self._answer_timeout) as waited:
                result = await relay.request(request, result_type)
            if waited.cancelled_caught:
                return types.ErrorData(code=REQUEST_TIMEOUT, message=(
                    f"the agent did not answer within {self._answer_timeout:g} s"))
            await self._check_leak(result.model_dump(by_alias=True, mode="json",
                                                     exclude_none=True))
        except MCPError as exc:
            return types.ErrorData(code=exc.code, message=self._redact_text(exc.message))
        except ProctorError as exc:
            return types.ErrorData(code=INVALID_REQUEST, message=exc.message)
        return result

    def _current(self) -> Relay | None:
        return self._active[-1] if self._active else None


def _rank(level: str) -> int:
    return _LEVELS.index(level) if level in _LEVELS else 0
