"""The agent-side client on asyncio (or trio, through anyio): the same requests and
answers as :class:`~proctor.client.ProctorClient`, awaited."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import httpx

from proctor.client.errors import ApprovalTimeoutError, CallRefusedError, ClientError
from proctor.client.keys import AgentKey
from proctor.client.protocol import ApprovalCallback, Protocol, Request, backoff
from proctor.client.sync import DEFAULT_APPROVAL_TIMEOUT_SECONDS, DEFAULT_TIMEOUT_SECONDS
from proctor.client.values import Grant, Task, Verdict
from proctor.clock import Clock

__all__ = ["AsyncProctorClient"]


class AsyncProctorClient:
    """:class:`~proctor.client.ProctorClient`, awaited; ``on_approval`` may be a coroutine
    function."""

    def __init__(self, base_url: str, agent_id: str, key: AgentKey, *,
                 audience: str | None = None, target: str | None = None,
                 clock: Clock | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 approval_timeout_seconds: float = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
                 on_approval: ApprovalCallback | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.protocol = Protocol(base_url, agent_id, key, audience=audience, target=target,
                                 clock=clock)
        self.approval_timeout_seconds = approval_timeout_seconds
        self.on_approval = on_approval
        self._http = http or httpx.AsyncClient(base_url=self.protocol.base_url,
                                               timeout=timeout_seconds)

    @property
    def agent_id(self) -> str:
        return self.protocol.agent_id

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncProctorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start_task(self, purpose: str, *, on_behalf_of: str,
                         ttl_seconds: int | None = None,
                         idle_seconds: int | None = None) -> Task:
        return Task.of(await self._send(self.protocol.start_task(
            purpose, on_behalf_of, ttl_seconds=ttl_seconds, idle_seconds=idle_seconds)))

    async def end_task(self, task: Task | str) -> list[str]:
        return list((await self._send(self.protocol.end_task(task))).get("revoked", []))

    async def issue_grant(self, task: Task | str, tools: Sequence[Mapping[str, Any] | str], *,
                          ttl_seconds: int | None = None, max_uses: int | None = None) -> Grant:
        return Grant.of(await self._send(self.protocol.issue_grant(
            task, tools, ttl_seconds=ttl_seconds, max_uses=max_uses)))

    async def exchange(self, grant: Grant, to_agent: str,
                       tools: Sequence[Mapping[str, Any] | str], *,
                       ttl_seconds: int | None = None, max_uses: int | None = None) -> Grant:
        body = await self._send(self.protocol.exchange(
            grant, to_agent, tools, ttl_seconds=ttl_seconds, max_uses=max_uses))
        if body.get("kind") != "grant":
            raise ClientError("answer_invalid", f"`{to_agent}` has no registered key: proctor "
                              "made an offer it must redeem itself")
        return Grant.of(body)

    async def revoke(self, grant: Grant, reason: str = "revoked by its agent") -> list[str]:
        return list((await self._send(self.protocol.revoke(grant, reason))).get("revoked", []))

    async def decide(self, grant: Grant, tool: str, args: Mapping[str, Any]) -> Verdict:
        request = self.protocol.decide(grant, tool, args)
        try:
            response = await self._http.request(request.method, request.path, json=request.json,
                                                headers=self.protocol.headers(),
                                                auth=self.protocol.auth)
        except httpx.HTTPError as exc:
            raise CallRefusedError(tool, "server_unavailable", (
                f"proctor at `{self.protocol.base_url}` cannot be reached "
                f"({type(exc).__name__}); the call is refused")) from exc
        return self.protocol.verdict(grant, tool, response)

    async def authorize(self, grant: Grant, tool: str, args: Mapping[str, Any], *,
                        approval_timeout_seconds: float | None = None,
                        on_approval: ApprovalCallback | None = None) -> Verdict:
        verdict = await self.decide(grant, tool, args)
        if verdict.decision != "approval_required" or verdict.approval is None:
            return self.protocol.outcome(verdict)
        approval_id = verdict.approval.id
        callback = on_approval or self.on_approval
        if callback is not None:
            called = callback(verdict)
            if hasattr(called, "__await__"):
                await called
        timeout = (self.approval_timeout_seconds if approval_timeout_seconds is None
                   else approval_timeout_seconds)
        clock = self.protocol.clock
        started, attempt = clock.monotonic(), 0
        while True:
            body = await self._send(self.protocol.read_approval(approval_id))
            if self.protocol.approval_settled(tool, approval_id, body):
                return self.protocol.outcome(await self.decide(grant, tool, args))
            waited = clock.monotonic() - started
            if waited >= timeout:
                raise ApprovalTimeoutError(tool, approval_id, timeout)
            await anyio.sleep(min(backoff(attempt), timeout - waited))
            attempt += 1

    async def _send(self, request: Request) -> dict[str, Any]:
        try:
            response = await self._http.request(request.method, request.path, json=request.json,
                                                headers=self.protocol.headers(),
                                                auth=self.protocol.auth)
        except httpx.HTTPError as exc:
            raise ClientError("server_unavailable", (
                f"proctor at `{self.protocol.base_url}` cannot be reached "
                f"({type(exc).__name__})")) from exc
        return self.protocol.read(response)
