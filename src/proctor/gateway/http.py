"""``proctor gateway``: many upstreams behind one streamable HTTP endpoint.

Endpoints (``P`` is the configured ``public_url``; without one, on loopback only,
``http://<listen>``)::

    P/mcp                   every upstream, tools prefixed ``<server>__<tool>``
    P/mcp/<server>          one upstream, under its own tool names
    P/.well-known/oauth-protected-resource[/mcp[/<server>]]   RFC 9728 metadata

Following the MCP authorization spec, every request to an endpoint carries the
agent's grant as a bearer token (``Authorization: Bearer <grant>``). It is
checked before the MCP layer sees the request — signature, issuer, audience,
time, revocation — and a missing or bad one is answered ``401`` with
``WWW-Authenticate: Bearer … resource_metadata="…"``. A body over the size cap is
answered ``413``, one nested past :data:`proctor.documents.MAX_DEPTH` ``400``
(``message_too_deep``), before the SDK parses it. Every request also carries a proof
of possession of the grant's key in the ``DPoP`` header (``htm``: a POST's JSON-RPC
method, ``response`` for a message without one, else the HTTP method; ``htu`` the
endpoint URL: :mod:`proctor.gateway.client`). A decided request (``tools/call``,
``resources/read``, ``prompts/get``, ``completion/complete``, ``resources/subscribe``,
``resources/unsubscribe``) has it checked by the Enforcer with the rest of the
decision (or by a refusal that comes before it: only then is that refusal the agent's);
any other by the door, its nonce claimed, before anything changes
(:mod:`proctor.gateway.door`): a missing or bad one is ``401`` with its ``proof_*``
code, audited. The grant is never passed on:
upstream connections are the gateway's own, made per grant with the headers of
the config (and the secrets leased for them).

A message is a decided request only as nothing but one (``jsonrpc``, ``id``, ``method``,
``params``): one that names a method and carries a ``result`` or an ``error`` too (the
SDK reads some such as an answer to the upstream's sampling or elicitation request)
proves the key at the door, and is then refused ``400 message_invalid``, as is a
decided method's request with any other member.

An MCP session belongs to the grant that opened it and the key that proved it; a request
for it with another grant (or key) is answered ``404`` as if it did not exist. A grant holds at most
:data:`MAX_SESSIONS_PER_GRANT` MCP sessions open at once: its next ``initialize`` is
``429`` ``session_limit``. When the grant is revoked or
expires, its gateway session closes (calls in flight fail), its MCP sessions are
terminated, and the next request is refused ``401``.

A plain ``tools/call`` on an MCP session of its grant is decided and answered by the
direct path (:mod:`proctor.gateway.http_direct`), without the SDK's session manager,
dispatcher and SSE response; every other request goes through the SDK.

A grant's gateway session that no request has held for ``session_idle_seconds``
is closed as idle (its upstreams stop); the agent's MCP sessions go on, and the
grant's next request opens a new gateway session. Each request holds its session
from the moment it is bound to it until it is answered, so an idle close never
lands under a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proctor.audit import AuditLog
from proctor.codes import Code, http_status, retry_headers, rpc_code
from proctor.documents import MAX_DEPTH, check_json_nesting
from proctor.errors import DocumentError, ProctorError
from proctor.gateway.client import PROOF_HEADER, proof_method
from proctor.gateway.config import GatewayConfig
from proctor.gateway.core import Gateway
from proctor.gateway.door import audit_refused_proof, is_proof_refusal, prove
from proctor.gateway.http_direct import HttpDirect, read_message
from proctor.gateway.rpc import (
    PREFIX_BYTES,
    SESSION_CLOSED,
    is_unanswered,
    repeated_key_refusal,
    request_id_in_prefix,
    rpc_error,
)
from proctor.gateway.server import Context, build_server
from proctor.gateway.session import GatewaySession
from proctor.gateway.views import Credentials, View
from proctor.gateway.watch import RevocationWatch
from proctor.grants import PROOF_ALGORITHMS, GrantAuthority, GrantClaims, GrantUse
from proctor.store import Store

if TYPE_CHECKING:
    import uvicorn

    from proctor.enforcement import CallVerdict, Enforcer, ToolCall

__all__ = ["MAX_SESSIONS_PER_GRANT", "HttpCredentials", "build_http_app", "serve_http"]

log = logging.getLogger(__name__)

_GRANT_KEY = "proctor_grant"
MAX_SESSIONS_PER_GRANT = 64
"""How many MCP sessions one grant may hold open on the gateway at once (the SDK's own cap,
10,000, is every grant's: one agent could fill it)."""
_METADATA = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class HttpCredentials:
    """The grant and proof one HTTP request carried; ``unproven``: the method its proof
    names (its ``htm``) when the door left the proof to the request's decision (None:
    the door checked it, its nonce claimed)."""

    token: str = field(repr=False)
    proof: str = field(repr=False)
    target: str
    source_ip: str | None = None
    unproven: str | None = None

    def target_for(self, server: str, name: str) -> str:
        return self.target

    def refusal_use(self, grants: GrantAuthority) -> GrantUse | None:
        """The proof the door left to the decision, checked for a refusal that comes
        before it (:mod:`proctor.gateway.door`); None if the door checked it."""
        if self.unproven is None:
            return None
        return grants.prepare(self.token, self.proof, method=self.unproven,
                              target=self.target, tool_id=None, args=None)

    def opening_use(self, grants: GrantAuthority) -> GrantUse | None:
        """The proof the door left to the decision, checked before a gateway session
        opens for the request (its nonce not spent, and left to the decision to claim:
        :meth:`HttpSessions.hold`); None if the door checked it."""
        if self.unproven is None:
            return None
        return grants.prove_unspent(self.token, self.proof, method=self.unproven,
                                    target=self.target)

    def decide(self, enforcer: Enforcer, call: ToolCall) -> Awaitable[CallVerdict]:
        return enforcer.decide_call_on_loop(self.token, self.proof, call)


class HttpSessions:
    """One gateway session per grant, run in the app's task group; and the MCP sessions
    each grant opened, to terminate them when the grant goes."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._by_grant: dict[str, GatewaySession] = {}
        self._lock = anyio.Lock()
        self.tasks: TaskGroup | None = None
        # MCP session id -> the grant that opened it and the key it proved
        self.mcp_owner: dict[str, tuple[str, str]] = {}
        self._mcp_sessions: dict[str, list[tuple[StreamableHTTPSessionManager, str]]] = {}
        self.direct: HttpDirect | None = None  # forgets the MCP sessions that end

    async def hold(self, claims: GrantClaims, creds: HttpCredentials | None = None
                   ) -> GatewaySession:
        """The grant's session (a new one if it has none), held for one request: the
        caller releases it (:meth:`GatewaySession.release`) once the request is answered.

        It is held in the same step of the event loop as the lookup that found or
        opened it, so the watch cannot close it as idle in between. An idle session
        is forgotten as it closes, so only a session closed for another reason
        (revoked, expired, the gateway stopping) is found closed: that fails with
        ``session_closed``.

        A session opens (its lease node stored, upstreams started, secrets leased, the
        configured manifest presented) only for a request whose proof holds: one the
        door left to its decision (``creds.unproven``) has it checked first, as its
        decision will, and a proof already spent refused; the nonce is left to the
        decision to claim, once. A proof that fails is the answer (its ``proof_*``
        code), audited by ``system:unauthenticated`` (:mod:`proctor.gateway.door`). A
        request on a live session is not checked here: its decision checks it.
        """
        found = self._by_grant.get(claims.grant_id)
        if found is not None:
            found.hold()
            return found
        if creds is not None and creds.unproven is not None:
            await self._gateway.results.proved(
                claims, urlsplit(creds.target).path, creds, creds.opening_use,
                method=creds.unproven)
        async with self._lock:
            found = self._by_grant.get(claims.grant_id)
            if found is None:
                if self.tasks is None:
                    raise rpc_error("session_closed", "the gateway is stopping")
                found = await self._gateway.open_session(claims, self.tasks)
                self._by_grant[claims.grant_id] = found
                await self._present(claims.agent_id)
            found.hold()
            return found

    async def _present(self, agent_id: str) -> None:
        """The manifest the configuration names for the agent, presented as its session
        opens (like ``proctor mcp wrap --manifest``)."""
        manifest = self._gateway.config.manifest_for(agent_id)
        if manifest is not None and self._gateway.present is not None:
            await anyio.to_thread.run_sync(self._gateway.present, agent_id, manifest)

    def is_live(self, grant_id: str) -> bool:
        """Whether the grant has an open session here (its grant passed the door, with
        the store read, when the session opened)."""
        found = self._by_grant.get(grant_id)
        return found is not None and not found.closed.is_set()

    def open_count(self, grant: str) -> int:
        """How many MCP sessions ``grant`` holds open now; those the SDK has ended (idle,
        or deleted) are forgotten here."""
        held = self._mcp_sessions.get(grant, [])
        live = [(m, s) for m, s in held if s in getattr(m, "_server_instances", {})]
        if len(live) < len(held):
            for _, ended in set(held) - set(live):
                self.mcp_owner.pop(ended, None)
            self._mcp_sessions[grant] = live
        return len(live)

    def opened(self, manager: StreamableHTTPSessionManager, mcp_session: str,
               claims: GrantClaims) -> None:
        self.mcp_owner[mcp_session] = (claims.grant_id, claims.key_thumbprint)
        self._mcp_sessions.setdefault(claims.grant_id, []).append((manager, mcp_session))

    def closed(self, session: GatewaySession) -> None:
        """The watch closed ``session``: forget it and end its grant's MCP sessions."""
        self._gateway.forget(session)
        grant = session.claims.grant_id
        if self._by_grant.get(grant) is session:
            # A live grant (idle, or its secret was replaced) opens a new session next
            # time; a revoked or expired one is refused at the door.
            del self._by_grant[grant]
        if session.close_reason == "idle":
            return  # only the upstreams stop: the agent's MCP sessions go on
        for manager, mcp_session in self._mcp_sessions.pop(grant, []):
            self.mcp_owner.pop(mcp_session, None)
            if self.direct is not None:
                self.direct.forget(mcp_session)
            # The SDK offers no public call to end one session; a request for it gets
            # 401 (its grant is revoked) or 404 from here on in any case.
            transports = getattr(manager, "_server_instances", {})
            transport = transports.get(mcp_session)
            if transport is not None and self.tasks is not None:
                self.tasks.start_soon(transport.terminate)


class HttpBinder:
    """The gateway session and credentials of one HTTP request (authenticated by the gate)."""

    def __init__(self, sessions: HttpSessions, public_url: str) -> None:
        self._sessions = sessions
        self._public = public_url.rstrip("/")

    def bind(self, ctx: Context) -> AbstractAsyncContextManager[tuple[GatewaySession,
                                                                       Credentials]]:
        """The request's session, held until the block ends, and its credentials."""
        request = ctx.request
        if not isinstance(request, Request):
            raise rpc_error("grant_missing", "the request carries no grant")
        return self.bind_request(request)

    @asynccontextmanager
    async def bind_request(self, request: Request
                           ) -> AsyncIterator[tuple[GatewaySession, Credentials]]:
        """The session and credentials of ``request`` (the SDK's, or one on the direct
        path), the session held until the block ends."""
        grant = request.scope.get("state", {}).get(_GRANT_KEY)
        if grant is None:
            # the gate lets nothing through without a grant; fail closed anyway
            raise rpc_error("grant_missing", "the request carries no grant")
        claims, token, unproven = grant
        client = request.client.host if request.client else None
        creds = HttpCredentials(token, request.headers.get(PROOF_HEADER, ""),
                                self._public + request.url.path, client, unproven)
        try:
            session = await self._sessions.hold(claims, creds)
        except ProctorError as exc:  # the store, say: no session, no call
            raise rpc_error(exc.code, exc.message, code=SESSION_CLOSED) from None
        try:
            yield session, creds
        finally:
            session.release()


class AuditLead:
    """Whether the gateway's event loop writes its calls' audit batch itself
    (:meth:`AuditLog.lead_on`): only while it serves one call (a POST to an MCP path)
    at most. A loop that leads runs a lone event's write on its own thread, the
    effects' SQL and the commit's fsync included; with a call in flight beside it,
    that would stall the other behind each commit (on slow storage, every agent on
    the loop), so the write goes to the writer thread, whose commit overlaps the
    loop's work."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0  # calls being served

    def start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Lead on ``loop`` whenever it serves one call at most (None: never)."""
        self._loop = loop
        self._audit.lead_on(loop if self.in_flight <= 1 else None)

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight == 2:
            self._audit.lead_on(None)

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 1 and self._loop is not None:
            self._audit.lead_on(self._loop)


class GrantGate:
    """ASGI middleware: the bearer grant on every MCP request, a cap on bodies, MCP
    sessions bound to their grant."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway, sessions: HttpSessions,
                 managers: dict[str, StreamableHTTPSessionManager], public_url: str,
                 direct: HttpDirect, binder: HttpBinder, lead: AuditLead) -> None:
        self._app = app
        self._lead = lead
        self._gateway = gateway
        self._sessions = sessions
        self._managers = managers
        self._direct = direct
        self._binder = binder
        self._public = public_url.rstrip("/")
        self._max = gateway.config.max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or scope.get("path", "") not in self._managers):
            await self._gate(scope, receive, send)
            return
        self._lead.enter()  # a call in flight (see AuditLead)
        try:
            await self._gate(scope, receive, send)
        finally:
            self._lead.leave()

    async def _gate(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self._managers:
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        metadata = f"{self._public}{_METADATA}{path}"
        token = _bearer(headers.get("authorization", ""))
        if token is None:
            await _unauthorized(metadata, None, "a bearer grant is required")(scope, receive, send)
            return
        post = scope["method"] == "POST"
        live = self._live(token) if post else None
        claims = live
        if live is None and post:
            try:
                claims = await self._inspect(token)
            except ProctorError as exc:
                await _door_refusal(metadata, exc)(scope, receive, send)
                return
        mcp_session = headers.get(MCP_SESSION_ID_HEADER)
        document: Any = None
        if post:
            # a body declared over the limit is refused unread (with `Expect:
            # 100-continue`, before the client is told to send it)
            body = None if _declared_over(headers, self._max) \
                else await _read_capped(receive, self._max)
            if body is None:
                refused = _refusal(None, "message_too_large",
                                   f"a message may be at most {self._max} bytes",
                                   {"max_bytes": self._max})
                refused.headers["connection"] = "close"  # the rest is never read
                await refused(scope, receive, send)
                return
            refusal = _unreadable(body)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            # read once, here, for whoever needs it: the direct path, the session cap (a
            # POST without a session may be an initialize however its method is spelt,
            # `"\u0069nitialize"`), the door's own check and the message's shape below
            document = read_message(body)
            receive = _replay(body, receive)
        unproven: str | None = None
        if post and _decided(document):
            # it proves the grant's key to its decision, or to a refusal that comes before
            # one (proctor.gateway.door): its proof's method
            unproven = document["method"]
        else:
            # the door's own check, a proof with it: nothing after it decides this request
            method = proof_method(scope["method"], _method_of(document))
            try:
                claims = await prove(self._gateway, token, headers.get(PROOF_HEADER, ""),
                                     method=method, target=self._public + path)
            except ProctorError as exc:
                if is_proof_refusal(exc):
                    client = scope.get("client")
                    await audit_refused_proof(self._gateway, token, exc, method=method,
                                              path=path, source=client[0] if client else None)
                await _door_refusal(metadata, exc)(scope, receive, send)
                return
        assert claims is not None
        owner = self._sessions.mcp_owner.get(mcp_session or "")
        if owner is not None and owner != (claims.grant_id, claims.key_thumbprint):
            await _rpc_response(404, None, -32600, "session not found")(scope, receive, send)
            return
        if (mcp_session is None and isinstance(document, dict)
                and document.get("method") == "initialize"
                and self._sessions.open_count(claims.grant_id) >= MAX_SESSIONS_PER_GRANT):
            # one agent would otherwise fill the SDK's sessions for every agent
            await _refusal(document.get("id"), "session_limit", (
                f"a grant may hold {MAX_SESSIONS_PER_GRANT} MCP sessions open here"),
                {"max_sessions": MAX_SESSIONS_PER_GRANT})(scope, receive, send)
            return
        scope.setdefault("state", {})[_GRANT_KEY] = (claims, token, unproven)
        manager = self._managers[path]
        if (document is not None and owner is not None  # a session of this grant and key
                and await self._take(scope, receive, send, headers, path, document)):
            return
        if document is not None:
            refusal = _invalid_message(document, headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            send = self._direct.watch_initialize(document, mcp_session, send)

        async def watch_session(message: Message) -> None:
            # the SDK names a session in its answer to any request without one, and keeps
            # it only if that request opened it (an initialize answered below 400)
            if message["type"] == "http.response.start" and message.get("status", 500) < 400:
                for key, value in message.get("headers", []):
                    if key.decode("latin-1").lower() == MCP_SESSION_ID_HEADER.lower():
                        session_id = value.decode("latin-1")
                        if session_id not in self._sessions.mcp_owner:
                            self._sessions.opened(manager, session_id, claims)
            await send(message)

        await self._app(scope, receive, watch_session)

    async def _take(self, scope: Scope, receive: Receive, send: Send, headers: Headers,
                    path: str, document: Any) -> bool:
        """Whether the direct path served this request (:mod:`proctor.gateway.http_direct`):
        a plain call on a session of this grant, or the agent's answer to (or
        cancellation of) such a call in flight."""
        direct = self._direct
        call = await direct.take(scope, headers, path, document)
        if call is not None:
            request = Request(scope, receive)
            await direct.serve(call, scope, send, path=path,
                               bind=lambda: self._binder.bind_request(request))
            return True
        if await direct.settle(scope, headers, path, document):
            session = headers[MCP_SESSION_ID_HEADER].encode("latin-1")
            await send({"type": "http.response.start", "status": 202, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"0"),
                (MCP_SESSION_ID_HEADER.encode(), session)]})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True
        return False

    async def _inspect(self, token: str) -> GrantClaims:
        """The grant as the store has it now (revocation, agent, task, uses): in a worker
        thread, since it reads the store."""
        return (await anyio.to_thread.run_sync(self._gateway.grants.inspect, token)).claims

    def _live(self, token: str) -> GrantClaims | None:
        """The claims of a grant that has an open session here, checked without the store
        (signature, issuer, time: no thread); None for any other token.

        A call on such a session is then decided in full, the grant checked in the store
        in the same worker thread as the decision (revocation, agent, task, proof, use), so
        it need not hop to a thread at the door for the same reads: a call hops once.
        Any request the gateway does not decide still gets the door's store check."""
        try:
            claims = self._gateway.grants.identify(token)
        except ProctorError:
            return None
        return claims if self._sessions.is_live(claims.grant_id) else None


def build_http_app(gateway: Gateway, *, store: Store | None = None) -> Starlette:
    """The gateway's ASGI app: an endpoint per upstream and one for all of them.

    With ``store`` on PostgreSQL, live sessions also hear other nodes' revocations.
    Raises :class:`~proctor.errors.ConfigError` if the configured ``listen`` is not
    loopback and no ``public_url`` is set: proofs would name an address nobody chose.
    """
    config = gateway.config
    config.check_listen()
    public = config.address
    sessions = HttpSessions(gateway)
    binder = HttpBinder(sessions, public)
    lead = AuditLead(gateway.audit)
    security = _transport_security(public, config.listen)
    views = {"/mcp": View(tuple(config.upstreams), prefixed=True)}
    views.update({f"/mcp/{name}": View((name,)) for name in config.upstreams})
    managers = {
        path: StreamableHTTPSessionManager(
            app=build_server(gateway, view, binder, name=f"proctor{path.replace('/', '-')}"),
            security_settings=security, max_request_body_size=config.max_message_bytes + 1)
        for path, view in views.items()}
    direct = HttpDirect(gateway, managers, views, security)
    sessions.direct = direct
    routes = [Route(path, endpoint=StreamableHTTPASGIApp(m)) for path, m in managers.items()]
    routes += [Route(f"{_METADATA}{path}", endpoint=_metadata(public + path, config))
               for path in managers]
    routes.append(Route(_METADATA, endpoint=_metadata(public + "/mcp", config)))
    watch = RevocationWatch(gateway.sessions, leases=gateway.grants.leases, clock=gateway.clock,
                            poll_seconds=config.revocation_poll_seconds,
                            store=store, on_close=sessions.closed,
                            idle_seconds=config.session_idle_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in managers.values():
                await stack.enter_async_context(manager.run())
            async with anyio.create_task_group() as tasks:
                sessions.tasks = tasks
                await tasks.start(watch.run)
                # the loop writes its calls' audit batch itself when nobody else is
                # writing and the lock is free, never waiting for another's (SQLite;
                # AuditLog.lead_on): no hand-off to the writer thread and back; only
                # while it serves one call at most (AuditLead)
                lead.start(asyncio.get_running_loop())
                try:
                    yield
                finally:
                    lead.start(None)
                    sessions.tasks = None
                    for session in list(gateway.sessions.values()):
                        session.close("the gateway is stopping")
                    tasks.cancel_scope.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(GrantGate, gateway=gateway, sessions=sessions, managers=managers,
                       public_url=public, direct=direct, binder=binder, lead=lead)
    return app


def serve_http(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> bool:
    """Run ``server`` until it is told to stop (a signal, or its ``should_exit``);
    False if it could not start (its port taken, say).

    Run under :func:`anyio.run`, not ``uvicorn.run``'s bare ``asyncio.run``: anyio then
    knows once (a context variable) that it runs on asyncio, where otherwise it asks
    sniffio, which sniffs for a current asyncio task, at every cancel scope, event,
    timeout and checkpoint of every request.
    """
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C is a stop
        anyio.run(server.serve, sockets)
    return server.started


def _metadata(resource: str, config: GatewayConfig
              ) -> Callable[[Request], Awaitable[Response]]:
    """RFC 9728 protected resource metadata for one endpoint."""
    document = {
        "resource": resource,
        "authorization_servers": list(config.authorization_servers),
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(PROOF_ALGORITHMS),
        "dpop_bound_access_tokens_required": True,
        "resource_name": "proctor MCP gateway",
    }

    async def endpoint(request: Request) -> Response:
        return JSONResponse(document)

    return endpoint


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "dpop") or not token:
        return None
    return token


def _unauthorized(metadata: str, code: str | None, message: str) -> Response:
    challenge = f'Bearer resource_metadata="{metadata}"'
    body: dict[str, Any] = {"error": "invalid_request" if code is None else "invalid_token",
                            "error_description": message}
    if code is not None:
        challenge += f', error="invalid_token", error_description="{code}"'
        body["reason"] = code
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})


def _door_refusal(metadata: str, exc: ProctorError) -> Response:
    """A grant the door could not accept: 401 when the grant fails its check, but the
    failure's own status when the check itself failed (the store out of reach: 503 with
    ``Retry-After``), as the API answers it: a client told 401 ``invalid_token`` would
    drop a grant that is good."""
    if http_status(exc.code) < 500:
        return _unauthorized(metadata, exc.code, exc.message)
    return _refusal(None, exc.code, exc.message, {})


def _rpc_response(status: int, request_id: Any, code: int, message: str,
                  data: Any = None, headers: Mapping[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error},
                        status_code=status, headers=headers)


def _refusal(request_id: Any, reason: Code, message: str,
             data: Mapping[str, Any] | None = None) -> Response:
    """A message refused before the SDK reads it: ``reason``'s HTTP status and JSON-RPC
    code (:mod:`proctor.codes`), ``data`` naming the reason when there is more to say;
    ``Retry-After`` for a failure that passes."""
    retry = retry_headers(reason)
    if retry and data is not None:
        data = {**data, "retry_after_seconds": int(retry["Retry-After"])}
    return _rpc_response(http_status(reason), request_id, rpc_code(reason),
                         f"{reason}: {message}",
                         None if data is None else {"reason": reason, **data}, retry)


_DECIDED = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete",
                      "resources/subscribe", "resources/unsubscribe"})


def _method_of(message: Any) -> str | None:
    """The JSON-RPC method ``message`` (the body's document) names, if it names one."""
    method = message.get("method") if isinstance(message, dict) else None
    return method if isinstance(method, str) else None


_REQUEST_MEMBERS = frozenset({"jsonrpc", "id", "method", "params"})
_ANSWER_MEMBERS = frozenset({"result", "error"})
_ID_TYPES = (int, str)  # as JSON reads them (an exact type: not bool, an int's subclass)


def _decided(message: Any) -> bool:
    """Whether ``message`` (the body's document, None if unreadable) is one request the
    gateway decides in full, as every reader after the door reads it: a request and
    nothing else (``jsonrpc`` 2.0, an id, a decided method, ``params`` an object or
    none, no other member). Its proof is then checked in its decision; anything else
    proves the grant's key at the door.

    A method alone does not make a request: the SDK's 2025 reader takes ``{"id": 3,
    "method": "tools/call", "error": {...}}`` for an error answering the upstream's
    request 3 (sampling, elicitation), and the gateway decides no answer."""
    if not isinstance(message, dict):
        return False
    method, params = message.get("method"), message.get("params")
    return (type(method) is str and method in _DECIDED
            and _REQUEST_MEMBERS.issuperset(message) and message.get("jsonrpc") == "2.0"
            and type(message.get("id")) in _ID_TYPES and (params is None or type(params) is dict))


def _misshapen(message: Any) -> bool:
    """Whether ``message`` is a request or an answer only as its reader chooses: it names
    a method and carries an answer (``result`` or ``error``), which JSON-RPC 2.0 makes
    neither (the SDK's 2025 reader takes it for whichever of its models fits best, the
    2026-07-28 one for a request); or it names a decided method with an id but is not
    the request :func:`_decided` takes (a member no request has): the door claimed its
    proof, which its decision would then refuse as spent."""
    if not isinstance(message, dict) or "method" not in message:
        return False
    if not _ANSWER_MEMBERS.isdisjoint(message):
        return True
    method = message["method"]
    return (isinstance(method, str) and method in _DECIDED and "id" in message
            and not _decided(message))


def _invalid_message(document: Any, headers: Headers) -> Response | None:
    """The answer to JSON that is not one valid JSON-RPC message, for the SDK's 2025
    transport (None for any other): ``-32600 message_invalid``, as the stdio wrapper
    answers it, with the message's id if it has a valid one (and is no answer). A
    message :func:`_misshapen` is refused so on every version.

    That transport reads a request whose id is neither a string nor an integer (``1.5``,
    ``true``, ``null``, an object) as a notification, since its reader ignores members it
    does not know, and answers ``202 Accepted``: no answer comes for what JSON-RPC 2.0
    makes an invalid request, owed an error with a null id. And it answers any other
    invalid message ``-32602`` with pydantic's text (several lines naming the SDK's models
    and linking to pydantic's docs). The 2026-07-28 entry (a version header the 2025
    handshake does not know) tells both apart itself, in one line.
    """
    request_id = document.get("id") if isinstance(document, dict) else None
    if not _misshapen(document):  # else refused on every version
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None
        try:
            message = types.jsonrpc_message_adapter.validate_python(document, by_name=False)
        except ValidationError:
            pass
        else:
            if not (isinstance(message, types.JSONRPCNotification) and "id" in document):
                return None
    elif not _ANSWER_MEMBERS.isdisjoint(document):
        request_id = None  # its id may be the upstream's request's: not the agent's own
    return _refusal(request_id if _is_id(request_id) else None, "message_invalid",
                    "the message is not a valid JSON-RPC request")


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _unreadable(body: bytes) -> Response | None:
    """The answer to a body nested past the depth cap (or not UTF-8), before the SDK
    parses it; None for any other body."""
    try:
        check_json_nesting(body, what="the message")
    except DocumentError as exc:
        if exc.code != "document_too_deep":
            return _refusal(None, "parse_error", "the message is not JSON")
        return _refusal(request_id_in_prefix(body[:PREFIX_BYTES]), "message_too_deep",
                        f"a message may nest at most {MAX_DEPTH} levels", {"max_depth": MAX_DEPTH})
    refusal = repeated_key_refusal(body)  # decided on one value, forwarded with the other
    if refusal is not None:
        if is_unanswered(body):  # a notification or a response: dropped, as accepted
            log.warning("dropped a notification or response: %r",
                        refusal[2])  # the agent's key: escaped
            return Response(status_code=202)
        return _refusal(*refusal, {})
    return None


def _declared_over(headers: Headers, limit: int) -> bool:
    """Whether the request's ``Content-Length`` says its body is over ``limit`` bytes."""
    declared = headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def _read_capped(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is over ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read already, then the client's own messages (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _transport_security(public_url: str, listen: str) -> TransportSecuritySettings:
    """DNS-rebinding protection: only the public host (and the listening one) are served."""
    public = urlsplit(public_url)
    hosts = {public.netloc, f"{public.hostname}:*", listen}
    origins = {f"{public.scheme}://{public.netloc}", f"{public.scheme}://{public.hostname}:*"}
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=sorted(h for h in hosts if h),
                                     allowed_origins=sorted(origins))
