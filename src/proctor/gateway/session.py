"""A gateway session: one agent, one grant, its own upstream connections.

A session is a node (kind ``session``) of the lease tree under its grant, and
each secret it injects is a lease under the same grant. Revoking the grant (or
anything above it) revokes them all; the :class:`~proctor.gateway.watch.RevocationWatch`
then closes the session: the calls in flight fail with ``session_closed``, the
upstream connections end (a stdio server is stopped), and the agent's transport
is closed.

Upstream connections are per session, so agents never share an upstream's state
and an upstream holds only the credentials leased under that one grant.

A session is *held* by each request bound to it, from the binding (in the same
step of the event loop as the lookup, so nothing can close it in between) until
the request is answered. The idle watch of the HTTP gateway closes only a session
that nobody holds and that nobody has held for ``session_idle_seconds``; a
revocation or an expiry closes a held session all the same, and its calls fail.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from proctor.clock import Clock
from proctor.errors import AuditUnavailableError, GatewayError, GrantError, ProctorError
from proctor.gateway.config import GatewayConfig, UpstreamConfig, fill_secrets, secret_names
from proctor.gateway.ports import Guard, SecretSource
from proctor.gateway.relay import RelayBoard
from proctor.gateway.rpc import rpc_error
from proctor.gateway.stderr import StderrRedaction
from proctor.gateway.tools import ExposedTool, ToolRegistry
from proctor.gateway.upstream import UpstreamConnection
from proctor.grants import GrantClaims, LeaseTree
from proctor.oversight.pinning import PinVerdict, ToolPins
from proctor.store import Store

__all__ = ["GatewaySession", "Upstream"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
SESSION_KIND = "session"
_PIN_LOOKUPS = 4  # a held-back tool's pin looked up again, once per listing made meanwhile


@dataclass(frozen=True, slots=True)
class Upstream:
    """A connected upstream of a session and the tools it offers, by upstream name."""

    connection: UpstreamConnection
    tools: Mapping[str, ExposedTool]
    pins: Mapping[str, PinVerdict] = field(default_factory=dict)  # by upstream tool name
    pin_mode: str = "strict"
    current: Mapping[str, Any] = field(default_factory=dict)  # the tools as last listed
    # why each tool this listing left out for its schema was refused, by upstream tool name
    refused: Mapping[str, str] = field(default_factory=dict)

    def held_back(self, name: str) -> PinVerdict | None:
        """The verdict that keeps ``name`` from agents (``pin: strict``; a definition a
        human rejected, in any pin mode), or None."""
        verdict = self.pins.get(name)
        if verdict is None or verdict.is_reviewed:
            return None
        return verdict if self.pin_mode == "strict" or verdict.is_rejected else None

    def pinned_digest(self, name: str) -> str | None:
        """With ``pin: strict``, the digest of the definition of ``name`` as this session
        listed it, which a call's write confirms is the reviewed one ("": none listed,
        never reviewed); None when the server is not strictly pinned."""
        if self.pin_mode != "strict":
            return None
        verdict = self.pins.get(name)
        return verdict.digest if verdict is not None else ""


class GatewaySession:
    """The gateway's state for one grant: lease node, upstreams, calls in flight."""

    def __init__(self, claims: GrantClaims, *, config: GatewayConfig, store: Store,
                 leases: LeaseTree, clock: Clock,
                 registry: ToolRegistry, secrets_source: SecretSource | None = None,
                 guard: Guard | None = None, errlog: TextIO | None = None,
                 relay: RelayBoard | None = None, pins: ToolPins | None = None) -> None:
        self.id = f"gws_{secrets.token_hex(12)}"
        self._pins = pins
        self.claims = claims
        self._config = config
        self._store = store
        self._leases = leases
        self._clock = clock
        self._registry = registry
        self._secrets = secrets_source
        self._guard = guard
        self._errlog = errlog
        self.relay = relay
        self._upstreams: dict[str, Upstream] = {}
        self._connecting: dict[str, anyio.Lock] = {}
        # listings of an upstream's tools are numbered as they are sent; the one stored
        # is the newest sent of those answered (see refresh)
        self._listings = itertools.count(1)
        self._listed_as: dict[str, int] = {}  # by upstream name: the stored listing's number
        self._storing: dict[str, anyio.Lock] = {}
        self._inflight: set[anyio.CancelScope] = set()
        self._tasks: TaskGroup | None = None
        # resource uri -> server, from listing (None: listed by more than one)
        self.resource_servers: dict[str, str | None] = {}
        self.node_ids: list[str] = [self.id]  # the session node and its secret leases
        self._leased: dict[str, str] = {}  # its secret leases' names, by lease id
        self.closed = anyio.Event()
        self.close_reason: str | None = None
        self._holds = 0
        self.last_used = clock.monotonic()  # when the last hold ended (the clock's monotonic)

    @property
    def is_busy(self) -> bool:
        """Whether a request holds the session (see :meth:`hold`), or an agent session
        follows a resource through it (:mod:`proctor.gateway.follows`)."""
        return self._holds > 0 or (self.relay is not None and self.relay.follows.is_following())

    def hold(self) -> None:
        """Mark the session in use by one more request until :meth:`release`; the idle
        watch leaves a held session open. Fails with ``session_closed`` if it is closed.

        Call it in the same step of the event loop as the lookup that found the
        session (no ``await`` in between), so that an idle close cannot come first.
        """
        self.check_open()
        self._holds += 1

    def release(self) -> None:
        """End one :meth:`hold`; the session's idle time counts from here."""
        self._holds -= 1
        self.last_used = self._clock.monotonic()

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.claims.expires_at, UTC)

    @property
    def revocable_ids(self) -> list[str]:
        """The lease nodes whose revocation ends the session: its grant's line (the grant
        and those it derives from), its own node and its secret leases."""
        return [*self.claims.lineage, *self.node_ids]

    def register(self) -> None:
        """Add the session's node under its grant (a blocking store write); refused with
        ``grant_revoked`` if the grant's line was revoked since the request that opens
        the session was checked, so that no session (nor upstream) starts under it."""
        with self._store.transaction() as conn:
            if self._leases.revoked_among(conn, self.claims.lineage):
                raise GrantError("grant_revoked", "the grant or one it derives from is revoked")
            self._leases.add(conn, node_id=self.id, parent_id=self.claims.grant_id,
                             kind=SESSION_KIND, task_id=self.claims.task_id,
                             agent_id=self.claims.agent_id, expires_at=self.expires_at)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the session's upstream connections until it is closed."""
        try:
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                task_status.started()
                await self.closed.wait()
                for upstream in self._upstreams.values():
                    upstream.connection.close()
        finally:
            self._tasks = None
            # The session and its secret leases end with it, however it ended.
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await anyio.to_thread.run_sync(self._end_leases)

    def _end_leases(self) -> None:
        reason = self.close_reason or "session ended"
        try:
            if self._secrets is not None and self._leased:
                # audited (secret.release), with the session's node, in one transaction
                self._secrets.release(self._leased, reason, agent_id=self.claims.agent_id,
                                      task_id=self.claims.task_id, with_nodes=[self.id])
            else:
                self._leases.revoke_subtree(self.node_ids, reason)
        except AuditUnavailableError:  # ended all the same: said by the secret store
            log.error("session %s: its secret leases ended unaudited", self.id)
        except Exception as exc:  # they expire with the grant in any case
            log.error("session %s: its leases could not be ended (%s)", self.id,
                      type(exc).__name__)

    def close(self, reason: str) -> None:
        """End the session: calls in flight fail, upstreams stop. Idempotent."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        log.info("session %s closed: %s", self.id, reason)
        for scope in list(self._inflight):
            scope.cancel()
        for upstream in self._upstreams.values():
            upstream.connection.close()
        self.closed.set()

    def check_open(self) -> None:
        if self.closed.is_set():
            raise rpc_error("session_closed",
                            f"the session ended: {self.close_reason or 'closed'}")

    # upstreams

    async def upstream(self, name: str) -> Upstream:
        """The session's connection to ``name``, connected (and its tools discovered) on
        first use. Raises :class:`GatewayError` if it cannot connect."""
        self.check_open()
        found = self._upstreams.get(name)
        if found is not None and found.connection.is_open:
            return found
        lock = self._connecting.setdefault(name, anyio.Lock())
        async with lock:
            found = self._upstreams.get(name)
            if found is not None and found.connection.is_open:
                return found
            config = self._config.upstream(name)
            taken = next(self._listings)
            connection = await self._connect(config)
            if self.closed.is_set():
                # Closed while it connected (revoked, say): close() has stopped the
                # upstreams it knew, so this one would outlive the session.
                connection.close()
                self.check_open()
            async with self._storing.setdefault(name, anyio.Lock()):
                found = self._upstreams[name] = await self._discovered(config, connection,
                                                                       connection.tools)
                self._listed_as[name] = taken
            return found

    async def refresh(self, name: str) -> Upstream:
        """The upstream with its tools listed again, and held against their pins: what a
        listing shows follows the server's definitions as they are now.

        Listings sent at once may be answered in any order: each is numbered as it is
        sent, and an answer is registered, checked against the pins and stored only if
        no listing sent after it was stored first (else the stored one is returned).
        Before, the last answer stored won: an older listing of a definition a human
        reviewed replaced a newer one held back, and the session's calls were judged
        on the older digest while the server served the newer definition."""
        found = await self.upstream(name)
        taken = next(self._listings)
        listed = await self.forward(found.connection.list_tools)
        async with self._storing.setdefault(name, anyio.Lock()):
            stored = self._upstreams.get(name)
            if stored is not None and self._listed_as.get(name, 0) > taken:
                return stored  # a newer listing's answer came first: this one is dropped
            found = self._upstreams[name] = await self._discovered(
                self._config.upstream(name), found.connection, listed)
            self._listed_as[name] = taken
        return found

    async def pin_verdict(self, upstream: Upstream, name: str
                          ) -> tuple[Upstream, PinVerdict | None]:
        """What keeps tool ``name`` from the agent now, or None, and the listing that
        verdict is on (``upstream`` or, listed again meanwhile, the newer one): a tool
        held back at its last listing is looked up again, since a human may have
        reviewed it since; the definition judged is the one this session's upstream
        listed (its digest), never what another session's listing made of the stored
        pin. A listing made while the pin is looked up is the one judged, and is never
        replaced by the older one the lookup began on (which then held a definition
        reviewed, and served the newer one the listing held back from the agent)."""
        for _ in range(_PIN_LOOKUPS):
            held = upstream.held_back(name)
            if held is None or self._pins is None:
                return upstream, held
            stored = await anyio.to_thread.run_sync(self._pins.verdict, held.tool_id,
                                                    held.digest)
            server = upstream.connection.name
            now = self._upstreams.get(server)
            if now is not None and now is not upstream:  # listed again meanwhile
                upstream = now
                continue
            if stored is not None and stored.is_reviewed:
                pins = {**upstream.pins, name: stored}
                upstream = self._upstreams[server] = Upstream(
                    upstream.connection, upstream.tools, pins, upstream.pin_mode,
                    upstream.current, upstream.refused)
                return upstream, None
            return upstream, stored if stored is not None else held  # rejected: tool_rejected
        return upstream, upstream.held_back(name)  # listed again at each lookup: held

    async def _discovered(self, config: UpstreamConfig, connection: UpstreamConnection,
                          listed: list[Any]) -> Upstream:
        listing = self._registry.register(config, listed)
        tools, refused = listing.tools, listing.refused
        current = {t.name: t for t in listed}
        if self._pins is None or config.pin == "off":
            return Upstream(connection, tools, {}, "off", current, refused)
        pins = await anyio.to_thread.run_sync(self._pins.check, config.name, listed)
        if config.pin == "warn":
            for verdict in pins.values():
                if not verdict.is_reviewed:
                    log.warning("%r (pin: warn, let through)", verdict.message)  # a tool's name
        return Upstream(connection, tools, pins, config.pin, current, refused)

    async def _connect(self, config: UpstreamConfig) -> UpstreamConnection:
        env, headers, injected = await anyio.to_thread.run_sync(self._inject, config)
        connection = UpstreamConnection(
            config, env=env, headers=headers, connect_timeout=self._config.connect_timeout_seconds,
            call_timeout=self._config.call_timeout_seconds, errlog=self._errlog,
            relay=self.relay, max_answer_bytes=self._config.max_answer_bytes,
            stderr=StderrRedaction(injected, self._guard))
        if self._tasks is None:
            raise GatewayError("session_closed", "the session is not running")
        await self._tasks.start(connection.serve)
        return connection

    def _inject(self, config: UpstreamConfig
                ) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """The upstream's environment and headers with every ``${secret:NAME}`` filled in
        from a lease under this session's grant, and the values filled in."""
        wanted = sorted({n for v in [*config.env.values(), *config.headers.values()]
                         for n in secret_names(v)})
        values: dict[str, str] = {}
        for name in wanted:
            if self._secrets is None:
                raise GatewayError("upstream_unavailable",
                                   f"upstream `{config.name}` needs secrets, and no secret "
                                   "store is configured")
            try:
                lease = self._secrets.lease(
                    name, leases=self._leases, parent_id=self.claims.grant_id,
                    task_id=self.claims.task_id, agent_id=self.claims.agent_id,
                    expires_at=self.expires_at, upstream=config.name)
            except ProctorError as exc:
                raise GatewayError("upstream_unavailable", f"upstream `{config.name}`: secret "
                                   f"`{name}` cannot be leased ({exc.code})") from None
            self.node_ids.append(lease.lease_id)
            self._leased[lease.lease_id] = name
            if self._guard is not None:
                self._guard.add_known_secret(lease.value)
            values[name] = lease.value
        env = {k: fill_secrets(v, values) for k, v in config.env.items()}
        headers = {k: fill_secrets(v, values) for k, v in config.headers.items()}
        return env, headers, list(values.values())

    # calls

    async def forward(self, send: Callable[[], Awaitable[_T]]) -> _T:
        """Run one upstream request; it fails with ``session_closed`` if the session is
        closed while it is in flight."""
        self.hold()
        try:
            with anyio.CancelScope() as scope:
                self._inflight.add(scope)
                try:
                    return await send()
                finally:
                    self._inflight.discard(scope)
        finally:
            self.release()
        self.check_open()  # cancelled by close()
        raise rpc_error("session_closed", "the session ended")

    def describe(self) -> dict[str, Any]:
        return {"session": self.id, "grant": self.claims.grant_id, "task": self.claims.task_id,
                "agent": self.claims.agent_id}
