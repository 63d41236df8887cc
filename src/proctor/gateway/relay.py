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

MCP does not say which call an upstream request belongs to (JSON-RPC has no
field for it), and a session's calls share one upstream connection: a request is
relayed to the newest call in flight on the session, which is exact when the
agent makes one call at a time. With none in flight it is refused. At most
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
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import mcp_types as types
from mcp.client.session import ElicitationFnT, SamplingFnT
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
        self._active: list[Relay] = []
        self._asking = 0  # the upstreams' requests relayed and not yet answered
        self.log_level: str = "info"
        self.follows = Follows()
        self.delivery = delivery or Delivery()

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
        relay = self._current()
        if relay is None:
            return types.ErrorData(code=INVALID_REQUEST, message="no call is in flight to "
                                   "relay this request to")
        answers = self._answers
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

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        relay = self._current()
        if (relay is None or _rank(params.level) < _rank(self.log_level)
                or self.delivery.is_stalled(relay)):
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

    def _current(self) -> Relay | None:
        return self._active[-1] if self._active else None


def _rank(level: str) -> int:
    return _LEVELS.index(level) if level in _LEVELS else 0
