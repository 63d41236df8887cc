"""The enforcement point behind every transport: sessions, listing and calls.

One call (``tools/call``, ``resources/read``, ``prompts/get``, ``completion/complete``,
``resources/subscribe``, ``resources/unsubscribe``), in order:

1. the session is open (its grant not revoked nor expired);
2. the tool exists upstream, and the arguments match its ``inputSchema``
   (else ``-32602`` naming the argument, and nothing is used up but the proof the
   request carried, checked and its nonce claimed with the refusal's event:
   :meth:`ResultGuard.reject <proctor.gateway.results.ResultGuard.reject>`);
3. the arguments carry no proctor grant (else it is revoked: ``grant_leaked``);
4. :meth:`Enforcer.decide_call` — grant, agent, Cedar with the arguments and the
   tool's labels, approvals, audit: the one decision path;
5. ``approval_required``: wait for a human, bounded; still pending →
   ``approval_pending`` naming the approval id;
6. forward to the upstream (bounded; fails if the session closes meanwhile);
7. the output guard redacts the result before the agent sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import nullcontext
from typing import Any, TextIO, TypeVar

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.shared.exceptions import MCPError

from proctor import telemetry
from proctor.audit import AuditLog
from proctor.clock import Clock
from proctor.enforcement import CallVerdict, Enforcer, ToolCall
from proctor.errors import GatewayError
from proctor.gateway.answers import SessionAnswers
from proctor.gateway.config import GatewayConfig
from proctor.gateway.delivery import Delivery
from proctor.gateway.ports import Guard, SecretSource
from proctor.gateway.relay import Relay, RelayBoard
from proctor.gateway.results import ResultGuard
from proctor.gateway.rpc import (
    rpc_error,
)
from proctor.gateway.session import GatewaySession, Upstream
from proctor.gateway.shaped import ShapedAnswer
from proctor.gateway.tools import (
    COMPLETION,
    PROMPT_GET,
    RESOURCE_READ,
    RESOURCE_SUBSCRIBE,
    RESOURCE_UNSUBSCRIBE,
    ExposedTool,
    ToolRegistry,
)
from proctor.gateway.views import Credentials, View
from proctor.gateway.visibility import Visibility
from proctor.grants import GrantAuthority, GrantClaims
from proctor.identity import Manifest
from proctor.oversight.pinning import ToolPins
from proctor.policy import Outcome, PolicyEngine
from proctor.policy.known_tools import KnownTools
from proctor.runtime import Runtime, issuer_for
from proctor.store import Store

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

_Listing = TypeVar("_Listing", types.ListToolsResult, types.ListPromptsResult,
                   types.ListResourcesResult, types.ListResourceTemplatesResult)


class Gateway:
    """Shared by every session of one gateway process."""

    def __init__(self, config: GatewayConfig, *, enforcer: Enforcer, grants: GrantAuthority,
                 engine: PolicyEngine, audit: AuditLog, store: Store, clock: Clock,
                 guard: Guard, secrets: SecretSource | None = None,
                 errlog: TextIO | None = None, tools: KnownTools | None = None,
                 pins: ToolPins | None = None,
                 present: Callable[[str, Manifest], None] | None = None) -> None:
        self.config = config
        self.present = present  # presents a configured manifest for an agent (HTTP mode)
        self.enforcer = enforcer
        self.grants = grants
        self.clock = clock
        self.audit = audit
        self.registry = ToolRegistry(engine, tools or KnownTools(store, clock))
        self.visibility = Visibility(engine)
        self.results = ResultGuard(guard, grants, audit, clock)
        self._store = store
        self._guard = guard
        self._secrets = secrets
        self._errlog = errlog
        self.pins = pins if pins is not None else ToolPins(store, clock, audit)
        self.sessions: dict[str, GatewaySession] = {}

    @classmethod
    def on(cls, runtime: Runtime, config: GatewayConfig, *,
           errlog: TextIO | None = None) -> Gateway:
        """The gateway on a process's runtime: its enforcer, grants, secret store and
        discovered tools, and an output guard that knows this deployment's grants."""
        from proctor.gateway.manifests import present_manifest
        from proctor.oversight import OutputGuard

        return cls(config, enforcer=runtime.enforcer, grants=runtime.grants,
                   engine=runtime.engine, audit=runtime.audit, store=runtime.store,
                   clock=runtime.clock,
                   guard=OutputGuard(grant_issuer=issuer_for(runtime.settings)),
                   secrets=runtime.secrets, errlog=errlog, tools=runtime.tools,
                   present=lambda agent_id, manifest: present_manifest(
                       runtime, agent_id, manifest, by="proctor-gateway"))

    # sessions

    async def open_session(self, claims: GrantClaims, tasks: TaskGroup) -> GatewaySession:
        """A running session for ``claims``' grant, its lease node stored."""
        results = self.results

        async def redact(model: Any) -> Any:
            return await results.redact(model, claims=claims, tool_id="an upstream's request",
                                        decision_event=None)

        async def check_leak(document: dict[str, Any]) -> None:
            await results.check_arguments(document, claims=claims,
                                          tool_id="an answer to an upstream's request")

        async def stalled(what: str, waited: float) -> None:
            await results.dropped(claims, what, waited)

        answers = SessionAnswers(self)
        board = RelayBoard(redact, check_leak, results.redact_text,
                           answer_timeout=self.config.relay_timeout_seconds,
                           delivery=Delivery(self.config.relay_send_timeout_seconds, stalled),
                           answers=answers)
        session = GatewaySession(claims, config=self.config, store=self._store,
                                 leases=self.grants.leases, clock=self.clock,
                                 registry=self.registry,
                                 secrets_source=self._secrets, guard=self._guard,
                                 errlog=self._errlog, relay=board, pins=self.pins)
        answers.session = session
        await anyio.to_thread.run_sync(session.register)
        await tasks.start(session.run)
        self.sessions[session.id] = session
        telemetry.add_gateway_sessions(1)
        return session

    def forget(self, session: GatewaySession) -> None:
        if self.sessions.pop(session.id, None) is not None:
            telemetry.add_gateway_sessions(-1)

    # listing

    async def list_tools(self, session: GatewaySession, view: View) -> list[types.Tool]:
        """The tools of ``view`` this session's grant and the policies could allow."""
        shown: list[types.Tool] = []
        self.enforcer.catch_up()  # an agent changed by another process is listed as it is
        for server in view.servers:
            upstream = await self._upstream_for_listing(session, view, server, refresh=True)
            if upstream is None:
                continue
            for name, tool in upstream.tools.items():
                if tool.listed is None or not self.visibility.shows(session.claims, tool.tool_id):
                    continue
                if upstream.held_back(name) is not None:
                    continue  # pin: strict, and a human has not reviewed this definition
                listed = upstream.current.get(name, tool.listed)  # as the server lists it now
                shown.append(listed.model_copy(update={"name": view.exposed(server, name)}))
        listing = types.ListToolsResult(tools=shown)
        return (await self._guarded(session, "tools/list", listing)).tools

    async def list_prompts(self, session: GatewaySession, view: View) -> list[types.Prompt]:
        shown: list[types.Prompt] = []
        for server in view.servers:
            upstream = await self._upstream_for_listing(session, view, server)
            if upstream is None or not self.visibility.shows(
                    session.claims, f"{server}/{PROMPT_GET}"):
                continue
            prompts = await self._forward(session, upstream.connection.list_prompts)
            shown.extend(p.model_copy(update={"name": view.exposed(server, p.name)})
                         for p in prompts)
        return (await self._guarded(session, "prompts/list",
                                    types.ListPromptsResult(prompts=shown))).prompts

    async def list_resources(self, session: GatewaySession, view: View
                             ) -> tuple[list[types.Resource], list[types.ResourceTemplate]]:
        """Resources and templates of ``view``; each resource's server is remembered in
        the session, so that ``resources/read`` on the shared endpoint finds it (a URI
        listed by two servers: by neither, see :meth:`resource_server`)."""
        resources: list[types.Resource] = []
        templates: list[types.ResourceTemplate] = []
        for server in view.servers:
            upstream = await self._upstream_for_listing(session, view, server)
            if upstream is None or not self.visibility.shows(
                    session.claims, f"{server}/{RESOURCE_READ}"):
                continue
            listed = await self._forward(session, upstream.connection.list_resources)
            _remember(session, (str(r.uri) for r in listed), server)
            resources.extend(listed)
            shapes = await self._forward(session, upstream.connection.list_resource_templates)
            _remember(session, (t.uri_template for t in shapes), server)
            templates.extend(shapes)
        listed_resources = await self._guarded(
            session, "resources/list", types.ListResourcesResult(resources=resources))
        listed_templates = await self._guarded(
            session, "resources/templates/list",
            types.ListResourceTemplatesResult(resource_templates=templates))
        return listed_resources.resources, listed_templates.resource_templates

    async def _guarded(self, session: GatewaySession, method: str,
                       listing: _Listing) -> _Listing:
        """A listing as the agent may see it: what upstreams list (names, descriptions,
        schemas, URIs) passes the output guard as their results do, since an upstream
        could quote the secrets injected into it (a first-seen server's tool definitions
        are reviewed as they come, and prompts and resources are not pinned)."""
        return await self.results.redact(listing, claims=session.claims,
                                         tool_id=f"the {method} answer",
                                         decision_event=None)

    # completions and subscriptions: decided as calls of their server's pseudo-tools

    async def complete(self, session: GatewaySession, creds: Credentials, view: View,
                       params: types.CompleteRequestParams, relay: Relay | None = None
                       ) -> types.CompleteResult:
        """Completion values for a prompt's or a resource template's argument: decided as
        ``<server>/completion.complete`` with the prompt (or the template's URI), the
        argument, its value and the other arguments in ``context.args``; the upstream
        gets only what was decided."""
        ref: types.PromptReference | types.ResourceTemplateReference
        args: dict[str, Any]
        if isinstance(params.ref, types.PromptReference):
            resolved = view.resolve(params.ref.name)
            if resolved is None:
                raise rpc_error("completion_unknown", f"prompt `{params.ref.name[:128]}` "
                                "does not exist here")
            server, name = resolved
            ref, args = types.PromptReference(type="ref/prompt", name=name), {"prompt": name}
        else:
            uri = params.ref.uri
            found = await self.resource_server(session, view, uri, creds)
            if found is None:
                raise rpc_error("completion_unknown", f"resource template `{uri[:200]}` is "
                                "not known here: list the resource templates first, or use "
                                "its server's endpoint")
            server, ref = found, types.ResourceTemplateReference(type="ref/resource", uri=uri)
            args = {"uri": uri}
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = dict(params.context.arguments) if params.context and \
            params.context.arguments else None
        args.update(argument=argument["name"], value=argument["value"])
        if context is not None:
            args["context"] = context
        upstream, tool = await self._tool(session, server, COMPLETION, COMPLETION, creds)
        verdict = await self._decide(session, creds, tool, args, "completion/complete",
                                     creds.target_for(server, COMPLETION))
        _serving(relay, verdict, creds)
        result = await self._forward(session, lambda: upstream.connection.complete(
            ref, argument, context), relay, server)
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def subscribe(self, session: GatewaySession, creds: Credentials, view: View,
                        uri: str, *, on: bool, relay: Relay) -> None:
        """Follow (or stop following) updates of a resource: decided as
        ``<server>/resources.subscribe`` (``resources.unsubscribe``) with the URI in
        ``context.args.uri``. The updates name the resource only, and reading it is
        decided as usual."""
        server = await self.resource_server(session, view, uri, creds)
        if server is None:
            raise rpc_error("resource_unknown",
                            f"resource `{uri[:200]}` is not known here: list the resources "
                            "first, or use its server's endpoint")
        kind = RESOURCE_SUBSCRIBE if on else RESOURCE_UNSUBSCRIBE
        upstream, tool = await self._tool(session, server, kind, uri, creds)
        await self._decide(session, creds, tool, {"uri": uri},
                           "resources/subscribe" if on else "resources/unsubscribe",
                           creds.target_for(server, kind))
        connection, board = upstream.connection, session.relay
        if board is None:  # nobody to hand updates to: the upstream's subscription only
            await self._forward(session, lambda: connection.subscribe(uri, on=on))
            return
        follows, agent = board.follows, relay.connection
        async with follows.holding(server, uri):  # subscribed once for all who follow
            if on:
                if not follows.is_subscribed(server, uri, connection):
                    await self._forward(session, lambda: connection.subscribe(uri, on=True))
                    follows.subscribed(server, uri, connection)
                follows.add(server, uri, agent)
                board.delivery.forgive(agent)
            elif (follows.remove(server, uri, agent) and not follows.is_followed(server, uri)
                  and follows.is_subscribed(server, uri, connection)):
                await self._forward(session, lambda: connection.subscribe(uri, on=False))
                follows.unsubscribed(server, uri)

    async def resource_server(self, session: GatewaySession, view: View, uri: str,
                              creds: Credentials | None) -> str | None:
        """The server a request on resource (or template) ``uri`` goes to: the
        endpoint's own; on the shared endpoint, the one that listed ``uri`` in this
        session (None: none of ``view``'s did). A URI two servers listed is refused,
        audited (``resource_ambiguous``): the last to list it would otherwise get its
        reads, decided as its own, and answer them with its own content. Tools and
        prompts are kept apart by their server's prefix; URIs are the servers' own."""
        if not view.prefixed:
            return view.servers[0]
        known = session.resource_servers
        if uri in known and known[uri] is None:
            await self.results.reject(session.claims, uri, "resource_ambiguous", creds)
            raise rpc_error("resource_ambiguous", f"resource `{uri[:200]}` is listed by more "
                            "than one upstream here: use its server's endpoint, "
                            "/mcp/<server>")
        server = known.get(uri)
        return server if server in view.servers else None

    async def _upstream_for_listing(self, session: GatewaySession, view: View,
                                    server: str, *, refresh: bool = False) -> Upstream | None:
        try:
            if refresh:
                return await session.refresh(server)
            return await session.upstream(server)
        except GatewayError as exc:
            if len(view.servers) == 1:
                raise _upstream_error(exc) from None
            log.warning("listing skips upstream `%s`: %s", server, exc.code)
            return None
        except MCPError as exc:  # the upstream's own error on listing its tools again
            raise self._passed_on(exc) from None

    # calls

    async def call_tool(self, session: GatewaySession, creds: Credentials, view: View,
                        exposed: str, arguments: Mapping[str, Any], relay: Relay | None = None,
                        *, meta: Mapping[str, Any] | None = None) -> types.CallToolResult:
        """One call: decided, forwarded, its result guarded. ``meta``: the request's
        ``_meta``, whose ``traceparent`` the call's span joins."""
        result = await self._traced(session, creds, view, exposed, arguments, relay, meta,
                                    document=False)
        assert isinstance(result, types.CallToolResult)
        return result

    async def call_tool_answer(self, session: GatewaySession, creds: Credentials, view: View,
                               exposed: str, arguments: Mapping[str, Any],
                               relay: Relay | None = None, *,
                               meta: Mapping[str, Any] | None = None
                               ) -> types.CallToolResult | ShapedAnswer:
        """As :meth:`call_tool`, for a direct path to the agent: an answer the upstream's
        direct path read stays a dict, guarded as one (:mod:`proctor.gateway.shaped`)."""
        return await self._traced(session, creds, view, exposed, arguments, relay, meta,
                                  document=True)

    async def _traced(self, session: GatewaySession, creds: Credentials, view: View,
                      exposed: str, arguments: Mapping[str, Any], relay: Relay | None,
                      meta: Mapping[str, Any] | None, *, document: bool
                      ) -> types.CallToolResult | ShapedAnswer:
        if not telemetry.is_enabled():
            return await self._call_tool(session, creds, view, exposed, arguments, relay,
                                         document)
        with telemetry.span(f"tools/call {exposed[:200]}", kind="server", carrier=meta,
                            attributes={"mcp.method.name": "tools/call",
                                        "gen_ai.operation.name": "execute_tool",
                                        "gen_ai.tool.name": exposed[:200],
                                        "mcp.session.id": session.id}):
            return await self._call_tool(session, creds, view, exposed, arguments, relay,
                                         document)

    async def _call_tool(self, session: GatewaySession, creds: Credentials, view: View,
                         exposed: str, arguments: Mapping[str, Any], relay: Relay | None,
                         document: bool) -> types.CallToolResult | ShapedAnswer:
        resolved = view.resolve(exposed)
        if resolved is None:
            await self.results.reject(session.claims, exposed, "tool_unknown", creds)
            raise _unknown_tool(exposed)
        server, name = resolved
        upstream, tool = await self._tool(session, server, name, exposed, creds)
        if tool.listed is None:  # a pseudo-tool (an answer, a read...): the gateway's own
            # name for what it decides, never a tool of the upstream to forward a call to
            await self.results.reject(session.claims, tool.tool_id, "tool_unknown", creds)
            raise _unknown_tool(exposed)
        args = dict(arguments)
        # pin: strict: the decision's write confirms that the definition this session
        # listed (its digest) is the reviewed one as committed (a human may have
        # reviewed another since, or another session found another one)
        verdict = await self._decide(session, creds, tool, args, "tools/call",
                                     creds.target_for(server, name),
                                     pinned=upstream.pinned_digest(name))
        _serving(relay, verdict, creds)
        progress = self._progress(session, relay)
        connection = upstream.connection
        call = connection.call_tool_answer if document else connection.call_tool
        result: types.CallToolResult | ShapedAnswer
        if not telemetry.is_enabled():  # no span to make, no trace context to pass on
            result = await self._forward(session, lambda: call(
                name, args, progress=progress), relay, server)
        else:
            with telemetry.span(f"tools/call {name}", kind="client", attributes={
                    "mcp.method.name": "tools/call", "gen_ai.tool.name": name,
                    "proctor.upstream": server}):
                carrier = telemetry.current_carrier()
                result = await self._forward(session, lambda: call(
                    name, args, progress=progress, meta=carrier), relay, server)
        if isinstance(result, ShapedAnswer):
            return await self.results.redact_answer(result, claims=session.claims,
                                                    tool_id=tool.tool_id,
                                                    decision_event=verdict.event_id)
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def read_resource(self, session: GatewaySession, creds: Credentials, server: str,
                            uri: str, relay: Relay | None = None) -> types.ReadResourceResult:
        upstream, tool = await self._tool(session, server, RESOURCE_READ, uri, creds)
        verdict = await self._decide(session, creds, tool, {"uri": uri}, "resources/read",
                                     creds.target_for(server, RESOURCE_READ))
        _serving(relay, verdict, creds)
        result = await self._forward(session, lambda: upstream.connection.read_resource(uri),
                                     relay, server)
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def get_prompt(self, session: GatewaySession, creds: Credentials, view: View,
                         exposed: str, arguments: Mapping[str, str] | None,
                         relay: Relay | None = None) -> types.GetPromptResult:
        resolved = view.resolve(exposed)
        if resolved is None:
            raise rpc_error("prompt_unknown", f"prompt `{exposed[:128]}` does "
                            "not exist here")
        server, name = resolved
        upstream, tool = await self._tool(session, server, PROMPT_GET, exposed, creds)
        args = {"name": name, "arguments": dict(arguments or {})}
        verdict = await self._decide(session, creds, tool, args, "prompts/get",
                                     creds.target_for(server, PROMPT_GET))
        _serving(relay, verdict, creds)
        result = await self._forward(
            session, lambda: upstream.connection.get_prompt(name, arguments), relay, server)
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def _tool(self, session: GatewaySession, server: str, name: str, shown: str,
                    creds: Credentials | None) -> tuple[Upstream, ExposedTool]:
        try:
            upstream = await session.upstream(server)
        except GatewayError as exc:
            raise _upstream_error(exc) from None
        refused = None if name in upstream.tools else upstream.refused.get(name)
        if refused is not None:  # hidden from this session's listing, whatever its pin
            await self.results.reject(session.claims, f"{server}/{name}", "tool_schema_refused",
                                      creds)
            raise rpc_error("tool_schema_refused", f"tool `{shown[:128]}` is refused: "
                            f"{refused}", tool=f"{server}/{name}")
        upstream, held = await session.pin_verdict(upstream, name)  # on the latest listing
        if held is not None and held.code is not None:
            # the definition the agent would act on is not the one a human reviewed
            await self.results.reject(session.claims, held.tool_id, held.code, creds)
            raise rpc_error(held.code, held.message, tool=held.tool_id,
                            change=held.change, renamed_from=held.renamed_from)
        tool = upstream.tools.get(name)
        if tool is None:
            await self.results.reject(session.claims, f"{server}/{name}", "tool_unknown", creds)
            raise _unknown_tool(shown)
        return upstream, tool

    async def tool_of(self, session: GatewaySession, server: str, name: str) -> ExposedTool:
        """``server``'s tool (or pseudo-tool) ``name``, as a call of it finds it."""
        return (await self._tool(session, server, name, name, None))[1]

    async def _decide(self, session: GatewaySession, creds: Credentials, tool: ExposedTool,
                      args: dict[str, Any], method: str, target: str, *,
                      pinned: str | None = None) -> CallVerdict:
        call = ToolCall(tool.tool_id, args, method=method, target=target,
                        source_ip=creds.source_ip, pinned=pinned)
        return await self.settle(session, tool, args, call,
                                 lambda: creds.decide(self.enforcer, call), creds)

    async def settle(self, session: GatewaySession, tool: ExposedTool, args: dict[str, Any],
                     call: ToolCall, decide: Callable[[], Awaitable[CallVerdict]],
                     creds: Credentials | None) -> CallVerdict:
        """``call`` with ``args`` checked (its tool's schema, no grant in them) and
        decided by ``decide``, an approval it asks for waited for: the allow, or the
        refusal raised as the agent's JSON-RPC error."""
        problem = tool.argument_errors(args)
        if problem is not None:
            await self.results.reject(session.claims, tool.tool_id, problem.code, creds)
            raise rpc_error(problem.code, problem.message, tool=tool.tool_id)
        await self.results.check_arguments(args, claims=session.claims, tool_id=tool.tool_id,
                                           creds=creds)
        verdict = await session.forward(decide)
        if verdict.outcome is Outcome.APPROVAL_REQUIRED:
            timeout = self.config.approval_timeout_seconds
            verdict = await session.forward(
                lambda: self.enforcer.await_approval(verdict, timeout=timeout))
        if verdict.outcome is Outcome.APPROVAL_REQUIRED:
            approval = verdict.approval.id if verdict.approval else None
            raise rpc_error("approval_pending",
                            f"a human has not yet decided approval `{approval}`; call again "
                            "once it is approved", reasons=verdict.reasons,
                            approval_id=approval, event_id=verdict.event_id)
        if verdict.outcome is not Outcome.ALLOW:
            code = verdict.code if verdict.code != "allow" else "enforcement_error"
            named: dict[str, Any] = {"tool": tool.tool_id} if code in (
                "tool_changed", "tool_unreviewed") else {}  # as the session's own pins tell
            raise rpc_error(code, "; ".join(verdict.reasons) or "denied",
                            reasons=verdict.reasons, policy_ids=tuple(verdict.policy_ids),
                            event_id=verdict.event_id, **named)
        return verdict

    def _progress(self, session: GatewaySession, relay: Relay | None) -> Any:
        """Relays the upstream's progress on this call, if the agent asked for progress,
        within the session's time bound (:mod:`proctor.gateway.delivery`)."""
        if relay is None or relay.progress_token is None:
            return None
        redact = self.results.redact_text
        delivery = session.relay.delivery if session.relay is not None else Delivery()

        async def progress(done: float, total: float | None, message: str | None) -> None:
            await delivery.send(relay, "progress", lambda: relay.progress(
                done, total, redact(message) if message else message))

        return progress

    async def _forward(self, session: GatewaySession, send: Any,
                       relay: Relay | None = None, server: str = "") -> Any:
        """``send`` to the upstream; what ``server`` sends meanwhile goes to ``relay``'s
        agent when it is this call's (:mod:`proctor.gateway.relay`)."""
        async def upstream_call() -> Any:
            try:
                with session.relay.during(relay, server) if session.relay else nullcontext():
                    return await send()
            except GatewayError as exc:
                raise _upstream_error(exc) from None
            except MCPError as exc:
                raise self._passed_on(exc) from None

        return await session.forward(upstream_call)

    def _passed_on(self, exc: MCPError) -> MCPError:
        """The upstream's own JSON-RPC error as the agent gets it: its code, its message
        redacted, its ``data`` left out (both could quote the upstream's credentials)."""
        return MCPError(exc.code, self.results.redact_text(exc.message))


def _serving(relay: Relay | None, verdict: CallVerdict, creds: Credentials) -> None:
    """The relay of a decided call knows its verdict: an answer to an upstream's request
    during the call is decided on that call's grant (:mod:`proctor.gateway.answers`)."""
    if relay is not None:
        relay.verdict, relay.source_ip = verdict, creds.source_ip


def _remember(session: GatewaySession, uris: Iterable[str], server: str) -> None:
    """``server`` listed ``uris``: each is remembered as its, or as nobody's (None) once
    another server listed it too, in this session."""
    known = session.resource_servers
    for uri in uris:
        if uri not in known:
            known[uri] = server
        elif known[uri] not in (server, None):
            log.warning("upstreams `%s` and `%s` both list resource %r: its reads on the "
                        "shared endpoint are refused", known[uri], server, uri[:200])
            known[uri] = None


def _unknown_tool(name: str) -> MCPError:
    return rpc_error("tool_unknown", f"tool `{name[:128]}` does not exist here")


def _upstream_error(exc: GatewayError) -> MCPError:
    return rpc_error(exc.code, exc.message)
