"""The client's side of proctor's API, without I/O: the requests it sends and how it reads
the answers. :class:`~proctor.client.ProctorClient` (sync) and
:class:`~proctor.client.AsyncProctorClient` only move these over HTTP, so both say and
understand exactly the same things.

What it keeps: the agent's key and id, how it signs each request (:attr:`Protocol.auth`:
an identity proof of its own for every request, which proctor takes once), and the
grants that proctor said are dead (revoked, expired, their task over): a dead grant
is never offered again — the next call is refused here, without asking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from proctor.client.auth import AgentAuth
from proctor.client.errors import ApprovalDeniedError, CallRefusedError, ClientError, wire_code
from proctor.client.keys import AgentKey
from proctor.client.values import Grant, Task, Verdict
from proctor.clock import Clock, SystemClock
from proctor.codes import Code

__all__ = ["DEAD_GRANT_CODES", "ApprovalCallback", "Protocol", "Request", "backoff"]

# codes after which a grant never works again: stop using it at once
DEAD_GRANT_CODES = frozenset({
    "grant_revoked", "grant_expired", "grant_uses_exhausted", "task_ended", "task_expired",
    "task_idle", "agent_not_active", "grant_unknown"})
# a clock further than this off the server's is named as the cause of a refusal
_CLOCK_SKEW_SECONDS = 30
# codes of a proof refused on its time: said as a clock problem when the clock is off
_SKEW_CODES = frozenset({"proof_stale", "proof_expired", "proof_not_yet_valid"})

ApprovalCallback = Callable[[Verdict], object]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    json: Mapping[str, Any] | None = None


class Protocol:
    """The agent's identity, its dead grants, and the requests of the API it uses."""

    def __init__(self, base_url: str, agent_id: str, key: AgentKey, *,
                 audience: str | None = None, target: str | None = None,
                 clock: Clock | None = None) -> None:
        if not agent_id.startswith("spiffe://") or "/agent/" not in agent_id:
            raise ValueError(f"agent id `{agent_id}` is not spiffe://<trust-domain>/agent/<name>")
        self.base_url = base_url.rstrip("/")
        self.agent_id = agent_id
        self.key = key
        trust_domain = agent_id.removeprefix("spiffe://").split("/", 1)[0]
        self.audience = audience or f"spiffe://{trust_domain}/proctor"
        # the URL the agent's proofs of possession name (htu): proctor's decide endpoint
        # unless an enforcement point in front of proctor is addressed
        self.target = target or f"{self.base_url}/v1/decide"
        self.clock = clock or SystemClock()
        # every request signed as it leaves, with an identity proof for it alone
        self.auth = AgentAuth(agent_id, key, audience=self.audience, clock=self.clock)
        self._dead: dict[str, Code] = {}

    # -- credentials

    def headers(self) -> dict[str, str]:
        """The agent's trace context (``traceparent``) when it runs OpenTelemetry; the
        ``Authorization`` of each request is :attr:`auth`'s."""
        return _trace_headers()

    # -- requests

    def start_task(self, purpose: str, on_behalf_of: str, *, ttl_seconds: int | None,
                   idle_seconds: int | None) -> Request:
        body: dict[str, Any] = {"agent": self.agent_id, "purpose": purpose,
                                "on_behalf_of": on_behalf_of}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        if idle_seconds is not None:
            body["idle_seconds"] = idle_seconds
        return Request("POST", "/v1/tasks", body)

    def end_task(self, task: Task | str) -> Request:
        return Request("POST", f"/v1/tasks/{_id(task)}/end")

    def issue_grant(self, task: Task | str, tools: Sequence[Mapping[str, Any] | str], *,
                    ttl_seconds: int | None, max_uses: int | None) -> Request:
        body: dict[str, Any] = {"task": _id(task), "scope": {"tools": _scope(tools)}}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        if max_uses is not None:
            body["max_uses"] = max_uses
        return Request("POST", "/v1/grants", body)

    def exchange(self, grant: Grant, to_agent: str, tools: Sequence[Mapping[str, Any] | str],
                 *, ttl_seconds: int | None, max_uses: int | None) -> Request:
        self.refuse_if_dead(grant, "grant/exchange")
        body: dict[str, Any] = {
            "token": grant.token, "to_agent": to_agent, "scope": {"tools": _scope(tools)},
            "proof": self.key.call_proof(grant.token, method="grant/exchange",
                                         target=self.issuer_of(grant), now=self.clock.now())}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        if max_uses is not None:
            body["max_uses"] = max_uses
        return Request("POST", "/v1/grants/exchange", body)

    def revoke(self, grant: Grant, reason: str) -> Request:
        return Request("POST", f"/v1/grants/{grant.accessor}/revoke", {"reason": reason})

    def decide(self, grant: Grant, tool: str, args: Mapping[str, Any]) -> Request:
        self.refuse_if_dead(grant, tool)
        proof = self.key.call_proof(grant.token, method="tools/call", target=self.target,
                                    now=self.clock.now())
        return Request("POST", "/v1/decide", {
            "token": grant.token, "proof": proof, "call": {"tool": tool, "args": dict(args)},
            "method": "tools/call", "target": self.target})

    def read_approval(self, approval_id: str) -> Request:
        return Request("GET", f"/v1/approvals/{quote(approval_id, safe='')}")

    @staticmethod
    def issuer_of(grant: Grant) -> str:
        return "spiffe://" + grant.agent.removeprefix("spiffe://").split("/", 1)[0] + "/proctor"

    # -- answers

    def read(self, response: httpx.Response) -> dict[str, Any]:
        """The answer's JSON body; a problem document or anything unexpected raises."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            raise ClientError(wire_code(body["code"]),
                              str(body.get("detail") or body.get("title") or ""),
                              status=response.status_code)
        raise ClientError("answer_invalid",
                          f"proctor answered {response.status_code} without a problem document",
                          status=response.status_code)

    def verdict(self, grant: Grant, tool: str, response: httpx.Response) -> Verdict:
        """The decision; a grant proctor declares dead is remembered as dead."""
        try:
            verdict = Verdict.of(tool, self.read(response))
        except ClientError as exc:
            if exc.code in DEAD_GRANT_CODES:
                self._dead[grant.accessor] = exc.code
            raise CallRefusedError(tool, exc.code, self._skewed(response, exc.code)
                                   or exc.message) from exc
        except (KeyError, TypeError) as exc:
            raise CallRefusedError(tool, "answer_invalid", "proctor's answer is not a decision") \
                from exc
        if verdict.code in DEAD_GRANT_CODES:
            self._dead[grant.accessor] = wire_code(verdict.code)
        skewed = self._skewed(response, verdict.code)
        if skewed is not None:
            raise CallRefusedError(tool, wire_code(verdict.code), skewed, verdict=verdict)
        return verdict

    def _skewed(self, response: httpx.Response, code: str) -> str | None:
        """For a proof refused on its time, whether this machine's clock is the cause."""
        if code not in _SKEW_CODES:
            return None
        skew = self.skew_seconds(response)
        if skew is None or abs(skew) <= _CLOCK_SKEW_SECONDS:
            return None
        return (f"this machine's clock is {skew:+.0f} s off proctor's: its proofs are "
                "refused until the clock is set right")

    def skew_seconds(self, response: httpx.Response) -> float | None:
        """How far this clock is ahead of the server's ``Date`` (whole seconds)."""
        from email.utils import parsedate_to_datetime

        date = response.headers.get("date")
        if not date:
            return None
        try:
            server = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return None
        return (self.clock.now() - server).total_seconds()

    def refuse_if_dead(self, grant: Grant, tool: str) -> None:
        code = self._dead.get(grant.accessor)
        if code is not None:
            raise CallRefusedError(tool, code, (
                f"grant `{grant.accessor}` is no longer usable ({code}); get a new one"))

    def is_dead(self, grant: Grant) -> bool:
        return grant.accessor in self._dead

    def outcome(self, verdict: Verdict) -> Verdict:
        """An allow passes; anything else is raised as the refusal it is."""
        if verdict.is_allowed:
            return verdict
        raise CallRefusedError(verdict.tool, wire_code(verdict.code), verdict.reason,
                               verdict=verdict)

    @staticmethod
    def approval_settled(tool: str, approval_id: str, body: Mapping[str, Any]) -> bool:
        """True once a human approved; raises once denied or expired; False while pending."""
        status = body.get("status")
        if status == "pending":
            return False
        if status in {"approved", "used"}:
            return True
        if status == "denied":
            raise ApprovalDeniedError(tool, approval_id, str(body.get("comment") or "no comment"))
        raise CallRefusedError(tool, "approval_expired", f"approval `{approval_id}` is {status}")


def _trace_headers() -> dict[str, str]:
    """The agent's current trace context, if it has OpenTelemetry (none otherwise)."""
    try:
        from opentelemetry import propagate
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _id(thing: Task | str) -> str:
    return thing.id if isinstance(thing, Task) else thing


def _scope(tools: Sequence[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
    return [{"tool": t} if isinstance(t, str) else dict(t) for t in tools]


def backoff(attempt: int, *, first: float = 0.2, most: float = 2.0) -> float:
    """Seconds to wait before asking again: 0.2, 0.4, 0.8, … at most 2."""
    return float(min(most, first * 2 ** attempt))
