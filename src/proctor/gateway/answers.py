"""The agent's answer to an upstream's sampling or elicitation request: decided, audited.

During a call an upstream may ask the agent's client to sample its model
(``sampling/createMessage``) or to ask its user (``elicitation/create``); the relay
(:mod:`proctor.gateway.relay`) hands the request to the agent on the call's stream.
The request is the upstream's act, the answer the agent's, and the answer carries
what the agent's model wrote or its user typed to that upstream: a way out for data
the task has seen, like a call's arguments. So, in order:

1. the request is audited as it comes (``gateway.upstream_request``, the gateway as
   the actor, naming the upstream, the method and the call's decision event); if it
   cannot be, it is refused and nothing reaches the agent;
2. the whole answer carries no proctor grant (else it is revoked: ``grant_leaked``);
3. the output guard redacts the answer (known credential formats, high-entropy strings,
   the secrets injected here; audited ``gateway.redact``): what may go to the upstream
   is what the guard lets through, and that is what is decided;
4. the answer is decided as a call of the upstream's pseudo-tool
   ``<server>/sampling.answer`` (``context.args``: ``text``, the answer's text, ``model``,
   ``role``, ``stop_reason``) or ``<server>/elicitation.answer`` (``action``,
   ``content``: what was filled in, as JSON text), on the grant of the call it came
   during (:meth:`Enforcer.decide_within`: the grant's scope, expiry and revocation, the
   agent, Cedar with the server's labels and the task's data sensitivity, the audit
   write; no new proof and no use: it is part of a call the agent proved and used);
   ``approval_required`` waits for a human as a call does;
5. anything but an allow answers the upstream ``-32010`` with ``data.reason`` only (the
   deployment's policy ids and reasons stay in the audit log); the agent is told nothing
   and its call goes on, answered as the upstream answers it. Only the decided answer
   goes on: its ``_meta`` is dropped.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, cast

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError

from proctor.audit import Actor, ActorType, AuditEvent, new_event_id
from proctor.codes import REGISTRY, Code
from proctor.enforcement import ToolCall
from proctor.errors import AuditError
from proctor.gateway.relay import SAMPLING, Relay
from proctor.gateway.rpc import rpc_error
from proctor.gateway.tools import ELICITATION_ANSWER, SAMPLING_ANSWER

if TYPE_CHECKING:
    from proctor.gateway.core import Gateway
    from proctor.gateway.session import GatewaySession
    from proctor.grants import GrantClaims

__all__ = ["SessionAnswers"]

log = logging.getLogger(__name__)

_GATEWAY = Actor(ActorType.SYSTEM, "proctor-gateway")


class SessionAnswers:
    """:class:`~proctor.gateway.relay.Answers` for one gateway session."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.session: GatewaySession | None = None  # set once the session is made

    async def asked(self, relay: Relay, server: str, method: str) -> None:
        verdict, session = relay.verdict, self.session
        if verdict is None or verdict.claims is None or session is None:
            raise rpc_error("enforcement_error", "no decided call is in flight to relay "
                            "this request to")
        if not await self._audited(verdict.claims, server, method, "relayed",
                                   verdict.event_id):
            raise rpc_error("audit_unavailable", "the request could not be audited, so "
                            "it is not relayed")

    async def refused(self, server: str, method: str, reason: str) -> None:
        if self.session is not None:
            await self._audited(self.session.claims, server, method, "refused", None,
                                reason=reason)

    async def _audited(self, claims: GrantClaims, server: str, method: str, outcome: str,
                       concerns: str | None, **detail: str) -> bool:
        """The upstream's request audited (``gateway.upstream_request``); whether it was."""
        now = self._gateway.clock.now()
        event = AuditEvent(id=new_event_id(now), time=now, actor=_GATEWAY,
                           action="gateway.upstream_request", target=server[:200],
                           outcome=outcome, task=claims.task_id, concerns=concerns,
                           detail={"agent": claims.agent_id, "upstream": server,
                                   "method": method, **detail})
        try:
            await anyio.to_thread.run_sync(self._gateway.audit.record, event)
        except AuditError:
            log.error("an upstream's %s could not be audited", method)
            return False
        return True

    async def decided(self, relay: Relay, server: str, method: str, answer: Any) -> Any:
        gateway, verdict, session = self._gateway, relay.verdict, self.session
        if verdict is None or verdict.claims is None or session is None:
            raise rpc_error("enforcement_error", "no decided call is in flight")
        kind = SAMPLING_ANSWER if method == SAMPLING else ELICITATION_ANSWER
        try:
            # every refusal, the tool's and the guard's too, goes out as its code alone
            tool = await gateway.tool_of(session, server, kind)
            guarded = await gateway.results.redact(answer, claims=verdict.claims,
                                                   tool_id=tool.tool_id,
                                                   decision_event=verdict.event_id)
            guarded = guarded.model_copy(update={"meta": None})
            args = _sampled(guarded) if kind == SAMPLING_ANSWER else _elicited(guarded)
            call = ToolCall(tool.tool_id, args, method=method, source_ip=relay.source_ip)
            # the door checked the answer's proof: nothing is left to prove (None)
            await gateway.settle(session, tool, args, call, lambda: anyio.to_thread.run_sync(
                gateway.enforcer.decide_within, verdict, call), None)
        except MCPError as exc:
            reason = exc.error.data.get("reason") if isinstance(exc.error.data, dict) else None
            code = reason if reason in REGISTRY else "enforcement_error"
            log.info("an answer to `%s` was refused: %s", server[:200], code)
            # the upstream learns the reason's code only: the policy ids, the reasons and
            # the event id are the deployment's
            raise rpc_error(cast(Code, code), "the agent's answer was refused") from None
        return guarded


def _sampled(answer: types.CreateMessageResult) -> dict[str, Any]:
    content = answer.content
    return {"text": content.text if isinstance(content, types.TextContent) else "",
            "model": answer.model, "role": answer.role,
            "stop_reason": answer.stop_reason or ""}


def _elicited(answer: types.ElicitResult) -> dict[str, Any]:
    content = "" if answer.content is None else json.dumps(
        answer.content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return {"action": answer.action, "content": content}
