"""What an upstream sends back during a call, relayed to the agent who made it.

While a call is in flight an upstream may report progress, log, ask the agent's
client to sample its model (``sampling/createMessage``) or to ask its user
(``elicitation/create``). Each is relayed on the agent's request that the call
serves, so it reaches the agent on the same stream (stdio, or the call's SSE
stream over HTTP), and it passes the output guard first: an upstream cannot
smuggle a credential into the agent's context through a prompt, a question or a
log line. An upstream's sampling or elicitation request is audited as it comes
(:class:`Answers`). What the agent answers goes back to the upstream only if it
carries no proctor grant (a grant in it is revoked, as for arguments) and only
once it is decided: the answer is the agent's own act, sent to that upstream, and
:class:`Answers` decides it as ``<server>/sampling.answer`` or
``<server>/elicitation.answer`` on the grant of the call it came during (audited;
a refusal answers the upstream with a JSON-RPC error and sends none of it). A
board without :class:`Answers` refuses both requests.

Each is relayed to the call it belongs to, and only to it: the calls of a grant's
agent sessions (up to 64 over HTTP) share one connection to each upstream, and what
an upstream sends during one call can carry that call's data. Progress names its
call (the progress token the gateway sent with it). A log line read while the
call's own request is being answered (an HTTP upstream's answer stream, read by the
call itself) is that call's. Anything else (stdio has no field for it, nor has
JSON-RPC; the SDK's session reads an HTTP upstream's requests apart from the call)
is the call's only if it is the one call in flight on that upstream in the
session; when none or several are, it cannot be attributed: a log line is dropped
(counted, and logged once), a request refused (``-32600``) and audited
(``gateway.upstream_request``, outcome ``refused``). An agent that makes one call
at a time per upstream loses nothing. At most
:data:`MAX_ASKING` (8) of an upstream's requests wait for the agent at once in a
session; another is refused (``-32600``) unaudited. A relayed request
waits for the agent's answer ``answer_timeout`` seconds at most (the gateway's
``relay_timeout_seconds``), however long the upstream would wait: then the upstream
is answered ``-32001`` (request timeout) and the agent's request is cancelled.

``resources/updated`` notifications go to the agent sessions that follow that
resource of that upstream (:mod:`proctor.gateway.follows`). Logs, progress and
updates are handed to the agent within a time bound, or dropped
(:mod:`proctor.gateway.delivery`): an agent that does not read never holds the
upstream's reader, nor the other sessions' messages.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import mcp_types as types
from mcp.client.session import ElicitationFnT, LoggingFnT, SamplingFnT
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT

from proctor.errors import ProctorError
from proctor.gateway.delivery import Delivery
from proctor.gateway.follows import Follows

if TYPE_CHECKING:
    from proctor.enforcement import CallVerdict

__all__ = ["Answers", "Relay", "RelayBoard"]

log = logging.getLogger(__name__)

DEFAULT_ANSWER_TIMEOUT = 60.0  # as the gateway config's ``relay_timeout_seconds``
_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
Redact = Callable[[Any], Awaitable[Any]]  # a model as the agent may see it
CheckLeak = Callable[[dict[str, Any]], Awaitable[None]]  # raises if a grant is in it
RedactText = Callable[[str], str]
SAMPLING = "sampling/createMessage"
ELICITATION = "elicitation/create"
# An upstream's sampling and elicitation requests waiting for the agent at once, per
# session: past it one is refused unaudited, so an upstream cannot flood the audit log
# and the agent with requests (each held up to the relay timeout) during one call.
MAX_ASKING = 8
# The call whose own task reads what the upstream sends (an HTTP upstream's answer
# stream is read by the call): what is read there is that call's.
_READING: ContextVar[tuple[RelayBoard, str, Relay] | None] = ContextVar(
    "proctor_relay_reading", default=None)


class Answers(Protocol):
    """Audits an upstream's request to the agent, and decides the agent's answer."""

    async def asked(self, relay: Relay, server: str, method: str) -> None:
        """``server`` asked the agent (``method``) during ``relay``'s call: audited;
        raises :class:`MCPError` (the upstream's error) if it may not be relayed."""
        ...

    async def decided(self, relay: Relay, server: str, method: str, answer: Any) -> Any:
        """``answer`` as it may go to ``server``, once decided and audited; raises
        :class:`MCPError` (the upstream's error) if it may not."""
        ...

    async def refused(self, server: str, method: str, reason: str) -> None:
        """``server`` asked the agent (``method``) and it was refused before any call's
        agent saw it (``reason``: ``unattributed``): audited."""
        ...


class Relay:
    """The agent's side of one call: its request's stream back to the agent."""

    # The call's verdict and source address, set once it is decided (before it is
    # forwarded): an answer to an upstream's request during it is decided on its grant.
    verdict: CallVerdict | None = None
    source_ip: str | None = None

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

    @property
    def connection(self) -> Connection:
        """The agent's MCP session, the same for each of its requests (``session`` is
        built per request): who follows a resource. The SDK's own, read from the
        session (private: ``tests/gateway/test_sdk_private_helpers.py`` names it)."""
        connection = getattr(self._ctx.session, "_connection", None)
        if not isinstance(connection, Connection):
            raise MCPError(code=INTERNAL_ERROR, message="the agent's session is not known")
        return connection


class RelayBoard:
    """Per gateway session: the calls in flight, the log level, the subscriptions."""

    def __init__(self, redact: Redact, check_leak: CheckLeak, redact_text: RedactText, *,
                 answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
                 delivery: Delivery | None = None,
                 answers: Answers | None = None) -> None:
        self._answer_timeout = answer_timeout
        self._answers = answers
        self._redact = redact
        self._check_leak = check_leak
        self._redact_text = redact_text
        self._active: dict[str, list[Relay]] = {}  # the calls in flight, by upstream
        self._asking = 0  # the upstreams' requests relayed and not yet answered
        self.log_level: str = "info"
        self.follows = Follows()
        self.delivery = delivery or Delivery()
        self.unattributed = 0  # log lines dropped: no one call they belong to
        self._told_unattributed = False
        self.refused_unattributed = 0  # requests refused so, past the one audited
        self._refused_unattributed: set[str] = set()  # the upstreams that one is of

    @contextmanager
    def during(self, relay: Relay | None, server: str) -> Iterator[None]:
        """``relay``'s call to upstream ``server`` is in flight in this block."""
        if relay is None:
            yield
            return
        active = self._active.setdefault(server, [])
        active.append(relay)
        reading = _READING.set((self, server, relay))
        try:
            yield
        finally:
            _READING.reset(reading)
            active.remove(relay)
            if not active:
                del self._active[server]
                self._refused_unattributed.discard(server)

    # the upstream connection's callbacks

    def sampling_for(self, server: str) -> SamplingFnT:
        """The sampling callback of ``server``'s connection: the answer goes to it."""
        async def sampling(context: Any, params: types.CreateMessageRequestParams
                           ) -> types.CreateMessageResult | types.ErrorData:
            answer: types.CreateMessageResult | types.ErrorData = await self._relayed(
                server, SAMPLING, params, types.CreateMessageRequest,
                types.CreateMessageResult)
            return answer
        return sampling

    def elicitation_for(self, server: str) -> ElicitationFnT:
        """The elicitation callback of ``server``'s connection."""
        async def elicitation(context: Any, params: types.ElicitRequestParams
                              ) -> types.ElicitResult | types.ErrorData:
            answer: types.ElicitResult | types.ErrorData = await self._relayed(
                server, ELICITATION, params, types.ElicitRequest, types.ElicitResult)
            return answer
        return elicitation

    async def _relayed(self, server: str, method: str, params: Any, request_type: Any,
                       result_type: type[Any]) -> Any:
        """Audited, guarded, asked of the agent on the call in flight, its answer checked
        for a grant and decided: what the upstream gets, the answer or an error."""
        relay, answers = self._current(server), self._answers
        if relay is None:
            if answers is not None and server in self._active:
                # audited once while calls are in flight on it, the rest counted: an
                # upstream's flood of requests must not flood the audit log
                if server in self._refused_unattributed:
                    self.refused_unattributed += 1
                else:
                    self._refused_unattributed.add(server)
                    await answers.refused(server, method, "unattributed")
            return types.ErrorData(code=INVALID_REQUEST, message="no one call in flight "
                                   "on this server to relay this request to")
        if answers is None:
            return types.ErrorData(code=INVALID_REQUEST, message="the gateway relays no "
                                   "request that it cannot decide the answer to")
        if self._asking >= MAX_ASKING:
            log.warning("upstream `%s` has too many requests waiting for the agent; one "
                        "refused", server[:200])
            return types.ErrorData(code=INVALID_REQUEST, message=(
                f"at most {MAX_ASKING} requests wait for the agent at once"))
        self._asking += 1
        try:
            return await self._asked(relay, answers, server, method, params, request_type,
                                     result_type)
        finally:
            self._asking -= 1

    async def _asked(self, relay: Relay, answers: Answers, server: str, method: str,
                     params: Any, request_type: Any, result_type: type[Any]) -> Any:
        try:
            await answers.asked(relay, server, method)
            redacted = await self._redact(params)
        except MCPError as exc:  # not audited, or the output guard cannot read it through
            return exc.error
        answer = await self._ask(relay, request_type(params=redacted), result_type)
        if isinstance(answer, types.ErrorData):
            return answer
        try:
            return await answers.decided(relay, server, method, answer)
        except MCPError as exc:
            return exc.error
        except ProctorError as exc:
            return types.ErrorData(code=INVALID_REQUEST, message=exc.message)

    def logging_for(self, server: str) -> LoggingFnT:
        """The log handler of ``server``'s connection: a line goes to its call."""
        async def logging(params: types.LoggingMessageNotificationParams) -> None:
            await self._logged(server, params)
        return logging

    async def _logged(self, server: str, params: types.LoggingMessageNotificationParams
                      ) -> None:
        relay = self._current(server)
        if relay is None:
            if server in self._active:
                self._dropped_unattributed(server)
            return
        if _rank(params.level) < _rank(self.log_level) or self.delivery.is_stalled(relay):
            return
        try:
            redacted = await self._redact(params)
        except MCPError:
            log.warning("an upstream log message the output guard cannot read was dropped")
            return
        await self.delivery.send(relay, "a log message", lambda: relay.log(redacted))

    def messages_from(self, server: str) -> Callable[[Any], Awaitable[None]]:
        """The handler of upstream ``server``'s other messages: its resource updates go
        to the sessions following that resource of ``server``, all at once, so that
        none waits for another."""
        async def message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                uri = str(message.params.uri)
                async with anyio.create_task_group() as tasks:
                    for follower in self.follows.followers(server, uri):
                        tasks.start_soon(self._updated, follower, uri)
                if not self.follows.is_followed(server, uri):  # gone, or dropped now
                    await self.follows.unfollowed(server, uri)
        return message

    async def _updated(self, follower: Connection, uri: str) -> None:
        try:
            sent = await self.delivery.send(follower, "a resource update",
                                            lambda: follower.send_resource_updated(uri))
        except Exception as exc:  # that agent is gone; the others still hear
            log.debug("resource update not relayed: %s", type(exc).__name__)
            sent = False
        if not sent:  # it stalled or is gone: it follows nothing from now on
            self.follows.drop(follower)

    async def _ask(self, relay: Relay, request: Any, result_type: type[Any]) -> Any:
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

    def _current(self, server: str) -> Relay | None:
        """The call in flight on ``server`` that what it sends now belongs to: the one
        reading it (None once that call has ended: never the next one alone in flight),
        else the only one in flight; None if none or several are."""
        active = self._active.get(server)
        if not active:
            return None
        reading = _READING.get()
        if reading is not None and reading[0] is self and reading[1] == server:
            return reading[2] if any(relay is reading[2] for relay in active) else None
        return active[0] if len(active) == 1 else None

    def _dropped_unattributed(self, server: str) -> None:
        self.unattributed += 1
        if not self._told_unattributed:
            self._told_unattributed = True
            log.warning("upstream `%s` logged while several calls were in flight on it: "
                        "a line that cannot be told to be one call's is dropped",
                        server[:200])


def _rank(level: str) -> int:
    return _LEVELS.index(level) if level in _LEVELS else 0
