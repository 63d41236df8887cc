"""``proctor mcp wrap``: one agent session over stdio, in front of one upstream server.

An MCP client starts proctor instead of the server (the server's command comes
after ``--``). The wrapper checks the grant it was given, registers the session
under it, starts the upstream with its secrets, lists its tools, and then serves
the agent until the agent hangs up or the session ends (grant revoked or
expired: the calls in flight fail, their answers are written, and the wrapper
exits so the client sees the server go away).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from pydantic import BaseModel

from proctor.errors import GrantError, ProctorError
from proctor.gateway.core import Gateway
from proctor.gateway.launch import LaunchCredentials
from proctor.gateway.relay import Relay
from proctor.gateway.rpc import internal_errors
from proctor.gateway.server import Context, build_server
from proctor.gateway.session import GatewaySession
from proctor.gateway.shaped import ShapedAnswer
from proctor.gateway.stdio import DirectCalls, StdioTransport
from proctor.gateway.views import Credentials, View
from proctor.gateway.watch import RevocationWatch
from proctor.store import Store

__all__ = ["SessionBinder", "WrapOutcome", "run_wrapper"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WrapOutcome:
    """How the session ended: ``closed_by`` is None when the agent hung up."""

    session_id: str
    closed_by: str | None


class SessionBinder:
    """Every request of a stdio connection belongs to its one session.

    The wrapper's watch closes the session only when its grant is revoked or expires
    (there is no idle close over stdio), and then every request fails and the
    wrapper exits; the hold is taken all the same, as every binder does."""

    def __init__(self, session: GatewaySession, creds: Credentials) -> None:
        self._session = session
        self._creds = creds

    @asynccontextmanager
    async def bind(self, ctx: Context) -> AsyncIterator[tuple[GatewaySession, Credentials]]:
        """The one session, held until the block ends, and the launch credentials."""
        self._session.hold()
        try:
            yield self._session, self._creds
        finally:
            self._session.release()


def _direct_calls(gateway: Gateway, session: GatewaySession, creds: Credentials,
                  view: View) -> DirectCalls:
    """A plain ``tools/call`` of the agent, straight from the transport to the gateway
    (see :mod:`proctor.gateway.stdio`): held and decided as the SDK's handler does."""

    async def call(name: str, arguments: dict[str, Any], relay: Relay
                   ) -> BaseModel | ShapedAnswer:
        session.hold()
        try:
            with internal_errors("tools/call"):
                return await gateway.call_tool_answer(session, creds, view, name, arguments,
                                                     relay)
        finally:
            session.release()

    return call


async def run_wrapper(gateway: Gateway, *, server: str, agent_id: str,
                      creds: LaunchCredentials, reader: ByteReceiveStream,
                      writer: ByteSendStream, store: Store | None = None,
                      on_open: Callable[[], object] | None = None) -> WrapOutcome:
    """Serve one session; raises :class:`GatewayError` or :class:`GrantError` if it cannot
    start (bad grant, a key that is not the grant's, other agent, upstream
    unreachable). The grant is held (:meth:`LaunchCredentials.hold`): its calls are
    decided without a proof each. ``on_open`` runs once the
    grant is known to be the agent's, before the session opens (the wrapper presents
    its configured manifest there)."""
    held = await anyio.to_thread.run_sync(creds.hold, gateway.grants)
    claims = held.claims
    if claims.agent_id != agent_id:
        raise GrantError("grant_wrong_agent", f"the grant is for `{claims.agent_id}`, not "
                           f"`{agent_id}`")
    if on_open is not None:
        await anyio.to_thread.run_sync(on_open)
    config = gateway.config
    failure: ProctorError | None = None
    async with anyio.create_task_group() as tasks:
        try:
            session = await gateway.open_session(claims, tasks)
        except ProctorError as exc:
            failure = exc
            tasks.cancel_scope.cancel()
        else:
            stop = anyio.Event()
            try:
                await session.upstream(server)  # on connect: start it, list its tools
                watch = RevocationWatch(gateway.sessions, leases=gateway.grants.leases,
                                        clock=gateway.clock,
                                        poll_seconds=config.revocation_poll_seconds,
                                        store=store,
                                        on_close=lambda _s: stop.set())
                await tasks.start(watch.run)
                view = View((server,))
                mcp_server = build_server(gateway, view, SessionBinder(session, held),
                                          name=f"proctor-{server}")
                transport = StdioTransport(reader, writer,
                                           max_message_bytes=config.max_message_bytes,
                                           calls=_direct_calls(gateway, session, held, view))
                # one agent's calls: each waits for its own commit anyway, so the loop
                # writes it itself when nobody else is writing (SQLite; AuditLog.lead_on)
                gateway.audit.lead_on(asyncio.get_running_loop())
                await transport.serve(mcp_server, stop=stop)
            except ProctorError as exc:  # raised after the task group, not inside a group
                failure = exc
            finally:
                gateway.audit.lead_on(None)
                closed_by = session.close_reason
                session.close(closed_by or "agent disconnected")
                gateway.forget(session)
                tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return WrapOutcome(session.id, closed_by)
