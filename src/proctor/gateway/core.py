"""The enforcement point behind every transport: sessions, listing and calls.

One call (``tools/call``, ``resources/read``, ``prompts/get``), in order:

1. the session is open (its grant not revoked nor expired);
2. the tool exists upstream, and the arguments match its ``inputSchema``
   (else ``-32602`` naming the argument, and nothing is used up);
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
from collections.abc import Mapping
from typing import Any, TextIO

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.shared.exceptions import MCPError

from proctor.audit import AuditLog
from proctor.clock import Clock
from proctor.enforcement import CallVerdict, Enforcer, ToolCall
from proctor.errors import GatewayError
from proctor.gateway.config import GatewayConfig
from proctor.gateway.ports import Guard, SecretSource
from proctor.gateway.results import ResultGuard
from proctor.gateway.rpc import (
    APPROVAL_PENDING,
    CALL_DENIED,
    INVALID_PARAMS,
    UPSTREAM_FAILED,
    rpc_error,
)
from proctor.gateway.session import GatewaySession, Upstream
from proctor.gateway.tools import PROMPT_GET, RESOURCE_READ, ExposedTool, ToolRegistry
from proctor.gateway.views import Credentials, View
from proctor.gateway.visibility import Visibility
from proctor.grants import GrantAuthority, GrantClaims
from proctor.policy import Outcome, PolicyEngine
from proctor.store import Store

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """Shared by every session of one gateway process."""

    def __init__(self, config: GatewayConfig, *, enforcer: Enforcer, grants: GrantAuthority,
                 engine: PolicyEngine, audit: AuditLog, store: Store, clock: Clock,
                 guard: Guard, secrets: SecretSource | None = None,
                 errlog: TextIO | None = None) -> None:
        self.config = config
        self.enforcer = enforcer
        self.grants = grants
        self.clock = clock
        self.registry = ToolRegistry(engine)
        self.visibility = Visibility(engine)
        self.results = ResultGuard(guard, grants, audit, clock)
        self._store = store
        self._guard = guard
        self._secrets = secrets
        self._errlog = errlog
        self.sessions: dict[str, GatewaySession] = {}

    # sessions

    async def open_session(self, claims: GrantClaims, tasks: TaskGroup) -> GatewaySession:
        """A running session for ``claims``' grant, its lease node stored."""
        session = GatewaySession(claims, config=self.config, store=self._store,
                                 leases=self.grants.leases, registry=self.registry,
                                 secrets_source=self._secrets, guard=self._guard,
                                 errlog=self._errlog)
        await anyio.to_thread.run_sync(session.register)
        await tasks.start(session.run)
        self.sessions[session.id] = session
        return session

    def forget(self, session: GatewaySession) -> None:
        self.sessions.pop(session.id, None)

    # listing

    async def list_tools(self, session: GatewaySession, view: View) -> list[types.Tool]:
        """The tools of ``view`` this session's grant and the policies could allow."""
        shown: list[types.Tool] = []
        for server in view.servers:
            upstream = await self._upstream_for_listing(session, view, server)
            if upstream is None:
                continue
            for name, tool in upstream.tools.items():
                if tool.listed is None or not self.visibility.shows(session.claims, tool.tool_id):
                    continue
                shown.append(tool.listed.model_copy(update={"name": view.exposed(server, name)}))
        return shown

    async def list_prompts(self, session: GatewaySession, view: View) -> list[types.Prompt]:
        shown: list[types.Prompt] = []
        for server in view.servers:
            upstream = await self._upstream_for_listing(session, view, server)
            if upstream is None or not self.visibility.shows(
                    session.claims, f"{server}/{PROMPT_GET}"):
                continue
            prompts = await session.forward(upstream.connection.list_prompts)
            shown.extend(p.model_copy(update={"name": view.exposed(server, p.name)})
                         for p in prompts)
        return shown

    async def list_resources(self, session: GatewaySession, view: View
                             ) -> tuple[list[types.Resource], list[types.ResourceTemplate]]:
        """Resources and templates of ``view``; each resource's server is remembered in
        the session, so that ``resources/read`` on the shared endpoint finds it."""
        resources: list[types.Resource] = []
        templates: list[types.ResourceTemplate] = []
        for server in view.servers:
            upstream = await self._upstream_for_listing(session, view, server)
            if upstream is None or not self.visibility.shows(
                    session.claims, f"{server}/{RESOURCE_READ}"):
                continue
            listed = await session.forward(upstream.connection.list_resources)
            session.resource_servers.update((str(r.uri), server) for r in listed)
            resources.extend(listed)
            templates.extend(await session.forward(upstream.connection.list_resource_templates))
        return resources, templates

    async def _upstream_for_listing(self, session: GatewaySession, view: View,
                                    server: str) -> Upstream | None:
        try:
            return await session.upstream(server)
        except GatewayError as exc:
            if len(view.servers) == 1:
                raise _upstream_error(exc) from None
            log.warning("listing skips upstream `%s`: %s", server, exc.code)
            return None

    # calls

    async def call_tool(self, session: GatewaySession, creds: Credentials, view: View,
                        exposed: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        resolved = view.resolve(exposed)
        if resolved is None:
            raise _unknown_tool(exposed)
        server, name = resolved
        upstream, tool = await self._tool(session, server, name, exposed)
        args = dict(arguments)
        verdict = await self._decide(session, creds, tool, args, "tools/call",
                                     creds.target_for(server, name))
        result = await self._forward(session, lambda: upstream.connection.call_tool(name, args))
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def read_resource(self, session: GatewaySession, creds: Credentials, server: str,
                            uri: str) -> types.ReadResourceResult:
        upstream, tool = await self._tool(session, server, RESOURCE_READ, uri)
        verdict = await self._decide(session, creds, tool, {"uri": uri}, "resources/read",
                                     creds.target_for(server, RESOURCE_READ))
        result = await self._forward(session, lambda: upstream.connection.read_resource(uri))
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def get_prompt(self, session: GatewaySession, creds: Credentials, view: View,
                         exposed: str, arguments: Mapping[str, str] | None
                         ) -> types.GetPromptResult:
        resolved = view.resolve(exposed)
        if resolved is None:
            raise rpc_error(INVALID_PARAMS, "prompt_unknown", f"prompt `{exposed[:128]}` does "
                            "not exist here")
        server, name = resolved
        upstream, tool = await self._tool(session, server, PROMPT_GET, exposed)
        args = {"name": name, "arguments": dict(arguments or {})}
        verdict = await self._decide(session, creds, tool, args, "prompts/get",
                                     creds.target_for(server, PROMPT_GET))
        result = await self._forward(
            session, lambda: upstream.connection.get_prompt(name, arguments))
        return await self.results.redact(result, claims=session.claims, tool_id=tool.tool_id,
                                         decision_event=verdict.event_id)

    async def _tool(self, session: GatewaySession, server: str, name: str,
                    shown: str) -> tuple[Upstream, ExposedTool]:
        try:
            upstream = await session.upstream(server)
        except GatewayError as exc:
            raise _upstream_error(exc) from None
        tool = upstream.tools.get(name)
        if tool is None:
            raise _unknown_tool(shown)
        return upstream, tool

    async def _decide(self, session: GatewaySession, creds: Credentials, tool: ExposedTool,
                      args: dict[str, Any], method: str, target: str) -> CallVerdict:
        problem = tool.argument_errors(args)
        if problem is not None:
            raise rpc_error(INVALID_PARAMS, "arguments_invalid", problem, tool=tool.tool_id)
        await self.results.check_arguments(args, claims=session.claims, tool_id=tool.tool_id)
        call = ToolCall(tool.tool_id, args, method=method, target=target,
                        source_ip=creds.source_ip)
        proof = creds.proof_for(method, target)
        verdict = await session.forward(
            lambda: self.enforcer.decide_call_async(creds.token, proof, call))
        if verdict.outcome is Outcome.APPROVAL_REQUIRED:
            timeout = self.config.approval_timeout_seconds
            verdict = await session.forward(
                lambda: self.enforcer.await_approval(verdict, timeout=timeout))
        if verdict.outcome is Outcome.APPROVAL_REQUIRED:
            approval = verdict.approval.id if verdict.approval else None
            raise rpc_error(APPROVAL_PENDING, "approval_pending",
                            f"a human has not yet decided approval `{approval}`; call again "
                            "once it is approved", reasons=verdict.reasons,
                            approval_id=approval, event_id=verdict.event_id)
        if verdict.outcome is not Outcome.ALLOW:
            raise rpc_error(CALL_DENIED, verdict.code, "; ".join(verdict.reasons) or "denied",
                            reasons=verdict.reasons, policy_ids=tuple(verdict.policy_ids),
                            event_id=verdict.event_id)
        return verdict

    async def _forward(self, session: GatewaySession, send: Any) -> Any:
        async def upstream_call() -> Any:
            try:
                return await send()
            except GatewayError as exc:
                raise _upstream_error(exc) from None
            except MCPError as exc:  # the upstream's own JSON-RPC error, passed on redacted
                raise MCPError(exc.code, self.results.redact_text(exc.message)) from None

        return await session.forward(upstream_call)


def _unknown_tool(name: str) -> MCPError:
    return rpc_error(INVALID_PARAMS, "tool_unknown", f"tool `{name[:128]}` does not exist here")


def _upstream_error(exc: GatewayError) -> MCPError:
    return rpc_error(UPSTREAM_FAILED, exc.code, exc.message)
