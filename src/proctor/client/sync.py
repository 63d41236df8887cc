"""The agent-side client, blocking: for agents built on threads (LangChain's sync tools, a
plain script). See :class:`~proctor.client.AsyncProctorClient` for the same on asyncio."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from proctor.client.errors import ApprovalTimeoutError, CallRefusedError, ClientError
from proctor.client.keys import AgentKey
from proctor.client.protocol import ApprovalCallback, Protocol, Request, backoff
from proctor.client.values import Grant, Task, Verdict
from proctor.clock import Clock

__all__ = ["DEFAULT_APPROVAL_TIMEOUT_SECONDS", "DEFAULT_TIMEOUT_SECONDS", "ProctorClient"]

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 120.0


class ProctorClient:
    """One agent talking to proctor: tasks, grants, a decision per tool call.

    >>> client = ProctorClient("http://127.0.0.1:8600", "spiffe://acme.example/agent/support",
    ...                        AgentKey.from_file("support.pem"))  # doctest: +SKIP
    >>> task = client.start_task("refund a lost parcel", on_behalf_of="bob@acme.example")
    >>> grant = client.issue_grant(task, ["crm/issue_refund"])
    >>> client.authorize(grant, "crm/issue_refund", {"amount_cents": 2500})  # or raises

    Every call of :meth:`authorize` signs a fresh proof of possession; an allow
    returns the verdict, anything else raises :class:`CallRefusedError` (an approval wait
    is bounded by ``approval_timeout_seconds`` and names the approval). A grant
    proctor answered as revoked or expired is refused here from then on.
    """

    def __init__(self, base_url: str, agent_id: str, key: AgentKey, *,
                 audience: str | None = None, target: str | None = None,
                 clock: Clock | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 approval_timeout_seconds: float = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
                 on_approval: ApprovalCallback | None = None,
                 http: httpx.Client | None = None) -> None:
        self.protocol = Protocol(base_url, agent_id, key, audience=audience, target=target,
                                 clock=clock)
        self.approval_timeout_seconds = approval_timeout_seconds
        self.on_approval = on_approval
        self._http = http or httpx.Client(base_url=self.protocol.base_url,
                                          timeout=timeout_seconds)
        self._stop = threading.Event()

    @property
    def agent_id(self) -> str:
        return self.protocol.agent_id

    def close(self) -> None:
        self._stop.set()
        self._http.close()

    def __enter__(self) -> ProctorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks and grants

    def start_task(self, purpose: str, *, on_behalf_of: str, ttl_seconds: int | None = None,
                   idle_seconds: int | None = None) -> Task:
        return Task.of(self._send(self.protocol.start_task(
            purpose, on_behalf_of, ttl_seconds=ttl_seconds, idle_seconds=idle_seconds)))

    def end_task(self, task: Task | str) -> list[str]:
        return list(self._send(self.protocol.end_task(task)).get("revoked", []))

    def issue_grant(self, task: Task | str, tools: Sequence[Mapping[str, Any] | str], *,
                    ttl_seconds: int | None = None, max_uses: int | None = None) -> Grant:
        return Grant.of(self._send(self.protocol.issue_grant(
            task, tools, ttl_seconds=ttl_seconds, max_uses=max_uses)))

    def exchange(self, grant: Grant, to_agent: str, tools: Sequence[Mapping[str, Any] | str],
                 *, ttl_seconds: int | None = None, max_uses: int | None = None) -> Grant:
        """A narrower grant for ``to_agent`` (delegation); it must hold a registered key."""
        body = self._send(self.protocol.exchange(grant, to_agent, tools,
                                                 ttl_seconds=ttl_seconds, max_uses=max_uses))
        if body.get("kind") != "grant":
            raise ClientError("answer_invalid", f"`{to_agent}` has no registered key: proctor "
                              "made an offer it must redeem itself")
        return Grant.of(body)

    def revoke(self, grant: Grant, reason: str = "revoked by its agent") -> list[str]:
        return list(self._send(self.protocol.revoke(grant, reason)).get("revoked", []))

    # -- calls

    def decide(self, grant: Grant, tool: str, args: Mapping[str, Any]) -> Verdict:
        """proctor's answer for one call, as a value (a deny is not raised)."""
        request = self.protocol.decide(grant, tool, args)
        try:
            response = self._http.request(request.method, request.path, json=request.json,
                                          headers=self.protocol.headers(),
                                          auth=self.protocol.auth)
        except httpx.HTTPError as exc:
            raise CallRefusedError(tool, "server_unavailable", _unreachable(self, exc)) from exc
        return self.protocol.verdict(grant, tool, response)

    def authorize(self, grant: Grant, tool: str, args: Mapping[str, Any], *,
                  approval_timeout_seconds: float | None = None,
                  on_approval: ApprovalCallback | None = None) -> Verdict:
        """The allow for this call, or :class:`CallRefusedError`; waits (bounded) for a human."""
        verdict = self.decide(grant, tool, args)
        if verdict.decision != "approval_required" or verdict.approval is None:
            return self.protocol.outcome(verdict)
        approval_id = verdict.approval.id
        callback = on_approval or self.on_approval
        if callback is not None:
            callback(verdict)
        timeout = (self.approval_timeout_seconds if approval_timeout_seconds is None
                   else approval_timeout_seconds)
        clock = self.protocol.clock
        started, attempt = clock.monotonic(), 0
        while True:
            body = self._send(self.protocol.read_approval(approval_id))
            if self.protocol.approval_settled(tool, approval_id, body):
                return self.protocol.outcome(self.decide(grant, tool, args))
            waited = clock.monotonic() - started
            if waited >= timeout or self._stop.is_set():
                raise ApprovalTimeoutError(tool, approval_id, timeout)
            self._stop.wait(min(backoff(attempt), timeout - waited))
            attempt += 1

    def _send(self, request: Request) -> dict[str, Any]:
        try:
            response = self._http.request(request.method, request.path, json=request.json,
                                          headers=self.protocol.headers(),
                                          auth=self.protocol.auth)
        except httpx.HTTPError as exc:
            raise ClientError("server_unavailable", _unreachable(self, exc)) from exc
        return self.protocol.read(response)


def _unreachable(client: ProctorClient, exc: httpx.HTTPError) -> str:
    return (f"proctor at `{client.protocol.base_url}` cannot be reached "
            f"({type(exc).__name__}); the call is refused")
