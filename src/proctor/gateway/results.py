"""The output guard on every answer, and what happens when a live grant leaks.

Every result (tool results, resource contents, prompts, upstream error texts, the
listings of tools, prompts and resources) goes through the output guard before the
agent sees it: known credential
formats, high-entropy strings, the secrets this gateway injected and proctor's
own tokens are redacted. Binary payloads (image and audio data, resource blobs)
are not text: they are searched for the injected secrets only, in the bytes they
decode to (through every hiding place a string is searched through) and as text
(:meth:`proctor.oversight.OutputGuard.redact_media`), and
a secret found is replaced there, the payload staying base64 (in the alphabet and
padding it came in; one unpadded or URL-safe is also searched for credential
formats). Only a payload that is base64 is binary, and only where MCP puts one (a
resource's ``blob``, an image's or audio's ``data``; never in ``_meta`` nor
structured content): any other is text.

A value the guard cannot read through (nested deeper than
:data:`proctor.documents.MAX_DEPTH`) is not passed on: such arguments are refused
``-32602 arguments_invalid``, such a result ``-32012 upstream_invalid_result``
(audited as ``gateway.redact`` with outcome ``withheld``).

A proctor grant in a call's arguments or in a result has leaked into an agent's
context. If it is live, it and everything derived from it are revoked at once
(``GrantAuthority.revoke``, reason ``leaked``; the revocation is audited), and a
``gateway.leak`` event records where it was found. A call whose arguments carry
a grant is refused (``grant_leaked``): forwarding it would hand the grant on. Its
proof (one the door left to the decision) is checked first: the grant found is revoked
whoever sent it, but the event names the agent (``detail.agent``, which its risk
reads) only if the request proved its key (``detail.proven``), else its grant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import anyio
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id
from proctor.clock import Clock
from proctor.codes import Code
from proctor.errors import AuditError, GrantError, GuardError, ProctorError
from proctor.gateway.ports import Guard
from proctor.gateway.rpc import rpc_error
from proctor.gateway.shaped import ShapedAnswer
from proctor.gateway.views import Credentials
from proctor.grants import GrantAuthority, GrantClaims, GrantUse
from proctor.grants.accounting import ProofSpent
from proctor.oversight.guard import is_media

__all__ = ["MEDIA_ON_THE_LOOP", "ResultGuard"]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
_SYSTEM = Actor(ActorType.SYSTEM, "proctor-gateway")
_UNAUTHENTICATED = Actor(ActorType.SYSTEM, "unauthenticated")
_BINARY_TYPES = {"image", "audio"}
_NOT_MEDIA = frozenset({"structuredContent", "_meta"})
_Where = tuple[str | int, ...]  # a path into a JSON document
# an answer's binary payloads (base64 characters) guarded on the event loop up to this;
# past it in a worker thread, so a large answer does not stall every other agent's
MEDIA_ON_THE_LOOP = 64 << 10


class ResultGuard:
    """Redacts results and revokes leaked grants."""

    def __init__(self, guard: Guard, grants: GrantAuthority, audit: AuditLog,
                 clock: Clock) -> None:
        self._guard = guard
        self._grants = grants
        self._audit = audit
        self._clock = clock

    async def check_arguments(self, arguments: dict[str, Any], *, claims: GrantClaims,
                              tool_id: str, creds: Credentials | None = None) -> None:
        """Refuse a call whose arguments carry a proctor grant; revoke it if live.

        The grant found is revoked whoever sent it; the request's proof (one the door
        left to the decision: ``creds``) is checked first, so that the ``gateway.leak``
        event says whether the agent proved its key (``detail.proven``; one that did
        not is named by its grant, not as the agent, and counts nothing against the
        agent's risk). The refusal is then that of :meth:`reject` (``grant_leaked`` by
        the agent, its proof's nonce claimed), or the proof's own."""
        try:
            outcome = self._guard.scan(arguments)
        except GuardError as exc:
            await self.reject(claims, tool_id, "arguments_invalid", creds)
            raise rpc_error("arguments_invalid", exc.message,
                            tool=tool_id) from None
        if outcome.grant_tokens:
            refused = rpc_error("grant_leaked", "the arguments carry a proctor grant; "
                                "it was revoked and the call was not forwarded")
            try:  # the refusal written before the revocation: the grant may be the call's
                use = None if creds is None else await self.proved(
                    claims, tool_id, creds, creds.refusal_use)
                await self._rejected_with(claims, tool_id, "grant_leaked", use, creds)
            except MCPError as exc:  # the proof's refusal (or the grant's line's)
                refused = exc
            reason = refused.error.data.get("reason") if isinstance(
                refused.error.data, dict) else None
            await self._revoke_leaked(outcome.grant_tokens, claims=claims,
                                      found_in=f"arguments of {tool_id}",
                                      proven=not str(reason).startswith("proof_"))
            raise refused

    async def redact(self, result: _M, *, claims: GrantClaims, tool_id: str,
                     decision_event: str | None) -> _M:
        """``result`` as the agent may see it."""
        document = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        redacted, changed = await self._guarded(document, claims, tool_id, decision_event)
        if not changed:  # nothing to take out: the model as it came
            return result
        return type(result).model_validate(redacted, by_name=False)

    async def redact_answer(self, answer: ShapedAnswer, *, claims: GrantClaims, tool_id: str,
                            decision_event: str | None) -> ShapedAnswer:
        """A direct call's answer (a dict in its version's shape) as the agent may see
        it: guarded as :meth:`redact` guards the model's dump; an answer the guard
        changed is shaped (checked) again before it goes out, as :meth:`redact` makes a
        model of it again."""
        redacted, changed = await self._guarded(answer.document, claims, tool_id,
                                                decision_event)
        return ShapedAnswer(redacted, None if changed else answer.version)

    async def _guarded(self, document: dict[str, Any], claims: GrantClaims, tool_id: str,
                       decision_event: str | None) -> tuple[dict[str, Any], bool]:
        """``document`` (a result's JSON dict, its binary payloads blanked in place
        meanwhile) redacted, and whether the guard changed or found anything; leaked
        grants revoked, findings audited."""
        binary: list[tuple[_Where, Any]] = []
        _set_aside(document, binary)
        try:
            outcome = self._guard.scan(document)
        except GuardError as exc:
            await self._record("gateway.redact", claims, tool_id, "withheld",
                               {"code": exc.code}, decision_event)
            raise rpc_error("upstream_invalid_result", f"the answer of "
                            f"{tool_id} cannot pass the output guard: {exc.message}") from None
        redacted = outcome.value
        found = len(outcome.findings)
        if sum(len(payload) for _, payload in binary) > MEDIA_ON_THE_LOOP:
            # CPU-heavy (~150-190 ms a MiB): a worker thread's, the loop serves on
            found += await anyio.to_thread.run_sync(self._redact_media, binary)
        else:
            found += self._redact_media(binary)
        if outcome.grant_tokens:
            await self._revoke_leaked(outcome.grant_tokens, claims=claims,
                                      found_in=f"result of {tool_id}")
        if found:
            await self._record("gateway.redact", claims, tool_id, "redacted",
                               {"findings": found}, decision_event)
        changed = bool(found) or redacted != document
        return _restore(redacted, binary), changed

    def _redact_media(self, binary: list[tuple[_Where, Any]]) -> int:
        """The binary payloads set aside, their known secrets redacted in place; how
        many were found."""
        found = 0
        for index, (where, payload) in enumerate(binary):
            cleaned, hits = self._guard.redact_media(payload)
            if hits:
                binary[index] = (where, cleaned)
                found += hits
        return found

    def redact_text(self, text: str) -> str:
        """An upstream's error text, redacted (it could quote the upstream's credentials)."""
        value = self._guard.scan(text).value
        return value if isinstance(value, str) else "[redacted]"

    async def _revoke_leaked(self, tokens: Iterable[str], *, claims: GrantClaims,
                             found_in: str, proven: bool = True) -> None:
        """Revoke each live grant of ``tokens``, audited ``gateway.leak``; ``proven``:
        whether what carried them proved the key of ``claims``' grant (else the event
        names that grant, not its agent: it was not the agent's act)."""
        for token in dict.fromkeys(tokens):
            await anyio.to_thread.run_sync(self._revoke_one, token, claims, found_in, proven)

    def _revoke_one(self, token: str, claims: GrantClaims, found_in: str,
                    proven: bool) -> None:
        try:
            leaked = self._grants.identify(token)
        except ProctorError:
            return  # not an unexpired grant of this issuer: nothing left to revoke
        revoked = self._grants.revoke(leaked.grant_id, "leaked")
        log.warning("grant %s leaked into the %s; %d nodes revoked", leaked.grant_id,
                    found_in, len(revoked))
        self._record_now("gateway.leak", claims, found_in, "revoked",
                         {"proven": proven, "leaked_grant": leaked.grant_id,
                          "leaked_agent": leaked.agent_id, "found_in": found_in,
                          "revoked": len(revoked)}, None, agent=proven)

    async def dropped(self, claims: GrantClaims, what: str, waited: float) -> None:
        """Audit an agent that did not take ``what`` in ``waited`` seconds: it and what
        follows for that stream are dropped (:mod:`proctor.gateway.delivery`)."""
        await self._record("gateway.relay", claims, what, "dropped",
                           {"waited_seconds": waited}, None)

    async def reject(self, claims: GrantClaims, target: str, code: Code,
                     creds: Credentials | None = None) -> None:
        """Audit a request refused before any decision (bad input) as the agent's own
        act, once the request has proved the grant's key (:mod:`proctor.gateway.door`):
        a proof the door left to the decision (``creds``' :meth:`Credentials.refusal_use`)
        is checked here and its nonce claimed in the event's own write. A proof that
        fails, or was spent already, is the refusal instead, raised as its JSON-RPC error
        and audited by ``system:unauthenticated``; so is a grant the write finds unusable
        (revoked, its task over), the agent's. ``creds`` None: nothing left to prove (an
        answer the door checked)."""
        use = None
        if creds is not None:
            use = await self.proved(claims, target, creds, creds.refusal_use)
        await self._rejected_with(claims, target, code, use, creds)

    async def _rejected_with(self, claims: GrantClaims, target: str, code: Code,
                             use: GrantUse | None, creds: Credentials | None) -> None:
        """The agent's refusal ``code`` audited, with ``use`` (its proof's nonce claimed
        in the event's write) if there is one."""
        event = self._rejected(claims, target, code)
        if use is None:
            try:
                await anyio.to_thread.run_sync(self._audit.record, event)
            except AuditError:
                log.error("a rejected request on %s could not be audited", target[:200])
            return
        await self._write(event, use, claims, target,
                          creds.source_ip if creds is not None else None)

    async def proved(self, claims: GrantClaims, target: str, creds: Credentials,
                     check: Callable[[GrantAuthority], GrantUse | None], *,
                     method: str | None = None) -> GrantUse | None:
        """The use ``check`` finds the request's proof makes (in a worker thread: it may
        read the store). A check that fails is raised as its JSON-RPC error, audited: by
        ``system:unauthenticated`` when the proof fails (``method``: the one it was
        checked for, named in the event), as the agent's refusal when the key was proved
        and the grant's line refused (its nonce claimed in the event's write)."""
        try:
            return await anyio.to_thread.run_sync(check, self._grants)
        except ProctorError as exc:
            spent = getattr(exc, "spent", None)
            if isinstance(spent, ProofSpent):  # the key proved, the grant's line refused
                await self._write(self._rejected(claims, target, exc.code), spent, claims,
                                  target, creds.source_ip)
            elif exc.code.startswith("proof_"):
                await self.reject_unproven(claims, target, exc.code, source=creds.source_ip,
                                           method=method)
            raise rpc_error(exc.code, exc.message) from None

    async def _write(self, event: AuditEvent, effects: GrantUse | ProofSpent,
                     claims: GrantClaims, target: str, source: str | None) -> None:
        """``event`` written with ``effects``, which claim the request's proof nonce; a
        refusal the write finds raised as its JSON-RPC error."""
        def refuse(exc: GrantError) -> AuditEvent:
            if exc.code == "proof_replayed":  # a replay may be anyone's: not the agent's
                return self._unproven(claims, target, exc.code, source=source)
            return self._rejected(claims, target, exc.code)

        effects.refuse = refuse
        try:
            await anyio.to_thread.run_sync(self._written, event, effects)
        except AuditError:  # the proof is not spent either: no decision can be written
            log.error("a rejected request on %s could not be audited", target[:200])
        except GrantError as exc:
            raise rpc_error(exc.code, exc.message) from None

    def _written(self, event: AuditEvent, effects: GrantUse | ProofSpent) -> None:
        self._audit.record_with(event, effects)
        if isinstance(effects, ProofSpent):
            if effects.refusal is not None:
                raise effects.refusal
        else:
            self._grants.raise_refusal(effects)

    def _rejected(self, claims: GrantClaims, target: str, code: str) -> AuditEvent:
        now = self._clock.now()
        return AuditEvent(id=new_event_id(now), time=now,
                          actor=Actor(ActorType.AGENT, claims.agent_id), action="gateway.reject",
                          target=target[:200], outcome="rejected", task=claims.task_id,
                          detail={"code": code})

    async def reject_unproven(self, claims: GrantClaims | None, target: str, code: Code, *,
                              source: str | None, method: str | None = None) -> None:
        """Audit a request refused for its proof (a grant used without its key, a proof
        spent twice): not the agent's act, so ``system:unauthenticated``'s, naming the
        grant (``claims``, if its token is one). Best effort: the refusal stands if the
        log cannot take it."""
        event = self._unproven(claims, target, code, source=source, method=method)
        try:
            await anyio.to_thread.run_sync(self._audit.record, event)
        except AuditError:
            log.error("a request refused for its proof on %s could not be audited",
                      target[:200])

    def _unproven(self, claims: GrantClaims | None, target: str, code: str, *,
                  source: str | None, method: str | None = None) -> AuditEvent:
        now = self._clock.now()
        detail = {"code": code}
        if method is not None:
            detail["method"] = method[:64]
        if claims is not None:
            detail["grant"] = claims.grant_id
        return AuditEvent(id=new_event_id(now), time=now, actor=_UNAUTHENTICATED,
                          action="gateway.reject", target=target[:200], outcome="rejected",
                          task=claims.task_id if claims is not None else "", source=source,
                          detail=detail)

    async def _record(self, action: str, claims: GrantClaims, target: str, outcome: str,
                      detail: dict[str, Any], concerns: str | None) -> None:
        await anyio.to_thread.run_sync(self._record_now, action, claims, target, outcome,
                                       detail, concerns)

    def _record_now(self, action: str, claims: GrantClaims, target: str, outcome: str,
                    detail: dict[str, Any], concerns: str | None, *,
                    agent: bool = True) -> None:
        """Record the gateway's event about ``claims``' agent (``agent`` False: about its
        grant, named in ``detail.grant``: the agent's risk reads ``detail.agent``)."""
        now = self._clock.now()
        about = ({"agent": claims.agent_id} if agent else {"grant": claims.grant_id})
        event = AuditEvent(id=new_event_id(now), time=now, actor=_SYSTEM, action=action,
                           target=target, outcome=outcome, task=claims.task_id,
                           concerns=concerns, detail={**about, **detail})
        try:
            self._audit.record(event)
        except AuditError:
            log.error("%s on %s could not be audited", action, target)


def _set_aside(node: Any, found: list[tuple[_Where, Any]], path: _Where = ()) -> None:
    """Blank binary payloads in place, remembering where they were and what they held."""
    if isinstance(node, dict):
        keys = ["blob"] if "uri" in node else []
        if node.get("type") in _BINARY_TYPES:
            keys.append("data")
        keys = [k for k in keys if isinstance(node.get(k), str) and is_media(node[k])]
        for key in keys:
            found.append(((*path, key), node[key]))
            node[key] = ""
        for key, value in node.items():
            # structured content is the tool's own JSON, `_meta` the server's: a `blob`
            # or `data` there is text
            if key not in keys and key not in _NOT_MEDIA:
                _set_aside(value, found, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _set_aside(item, found, (*path, index))


def _restore(redacted: Any, found: list[tuple[_Where, Any]]) -> Any:
    """Put the binary payloads back into the guard's redacted copy."""
    for path, value in found:
        holder = redacted
        for step in path[:-1]:
            holder = holder[step]
        holder[path[-1]] = value
    return redacted
