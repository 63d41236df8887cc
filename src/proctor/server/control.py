"""Authorizing the control plane itself, with Cedar.

Every API operation is a Cedar action (``Action::"api:grant.revoke"``), asked
of a principal (``Human`` with roles, or ``Agent``) on a resource (a
``Service`` collection, an ``Agent``, a ``Task``, a ``Grant``, an
``Approval``). The schema and policies are fixed and ship with proctor
(``cedar/schema.cedarschema``, ``cedar/policies.cedar``); they are validated
when the server starts, and a failure to evaluate is a refusal.

A refusal raises a 403 problem and is written to the audit log as an event
of its own (outcome ``refused``), with the determining policies.

The policies never change while the server runs, so an answer is a function of the
request and its two entities alone: it is remembered (up to :data:`REMEMBERED`
requests), and the same request from the same caller on the same resource (an
agent deciding call after call under one grant) is not evaluated again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cedarpy

from proctor.audit import AuditEvent, AuditLog, DecisionRecord, new_event_id
from proctor.clock import Clock
from proctor.codes import Code
from proctor.errors import ApiError, AuditError
from proctor.policy import Decision, Outcome, ReasonCode
from proctor.policy.compiled import CompiledPolicies, compile_sources
from proctor.policy.schema import CompiledSchema
from proctor.server.principals import Principal

__all__ = ["POLICY_FILE", "SCHEMA_FILE", "ControlPlane", "entity", "service"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent / "cedar"
SCHEMA_FILE = _HERE / "schema.cedarschema"
POLICY_FILE = _HERE / "policies.cedar"
REMEMBERED = 4096  # answers kept; all are forgotten when full


def entity(type_: str, id_: str, **attrs: Any) -> dict[str, Any]:
    """A Cedar entity of the control-plane schema; an ``Agent`` value is given as
    ``("Agent", id)`` and becomes an entity reference."""
    values = {k: {"__entity": {"type": v[0], "id": v[1]}} if isinstance(v, tuple) else v
              for k, v in attrs.items()}
    return {"uid": {"type": type_, "id": id_}, "attrs": values, "parents": []}


def service(name: str) -> dict[str, Any]:
    """A collection of the API, such as ``Service::"policies"``."""
    return entity("Service", name)


class ControlPlane:
    """The control-plane decision point, and the audit of its refusals."""

    def __init__(self, audit: AuditLog, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        self.schema = CompiledSchema(SCHEMA_FILE.read_text(encoding="utf-8"))
        self.policies: CompiledPolicies = compile_sources(
            {POLICY_FILE.name: POLICY_FILE.read_text(encoding="utf-8")}, self.schema, {})
        self._set = self.policies.full
        self._answers: dict[str, Decision] = {}

    def decide(self, principal: Principal, action: str, resource: Mapping[str, Any], *,
               context: Mapping[str, Any] | None = None) -> Decision:
        """Whether ``principal`` may do ``action`` on ``resource``; never raises."""
        caller = principal.entity()
        try:  # everything the answer depends on; the policies are fixed
            key = json.dumps([caller, action, resource, context], sort_keys=True,
                             separators=(",", ":"))
        except (TypeError, ValueError):  # not JSON: Cedar will say so below
            key = None
        known = self._answers.get(key) if key is not None else None
        if known is not None:
            return known
        request = {"principal": caller["uid"], "action": {"type": "Action", "id": action},
                   "resource": resource["uid"], "context": dict(context or {})}
        try:
            result = cedarpy.is_authorized(request, self._set,
                                           _unique([caller, dict(resource)]),
                                           schema=self.schema.handle)
        except Exception as exc:  # an authorization answer, never an exception
            log.error("control-plane decision on `%s` failed: %s", action, type(exc).__name__)
            return Decision(Outcome.DENY, ReasonCode.ENGINE_ERROR,
                            reasons=("the control-plane decision failed, so it is refused",))
        decision = self._answer(principal, action, result)
        if key is not None and not decision.errors:
            if len(self._answers) >= REMEMBERED:
                self._answers.clear()
            self._answers[key] = decision
        return decision

    def _answer(self, principal: Principal, action: str,
                result: cedarpy.AuthzResult) -> Decision:
        errors = tuple(result.diagnostics.errors)
        ids = tuple(sorted(result.diagnostics.reasons))
        found = [self.policies.policies[i] for i in ids if i in self.policies.policies]
        reasons = tuple(p.annotations.get("reason") or f"policy `{p.id}`" for p in found)
        if errors:
            return Decision(Outcome.DENY, ReasonCode.ENGINE_ERROR, policy_ids=ids,
                            reasons=("a control-plane policy failed to evaluate, so the "
                                     "request is refused",), errors=errors)
        if result.decision is cedarpy.Decision.Allow:
            return Decision(Outcome.ALLOW, ReasonCode.PERMITTED, policy_ids=ids, reasons=reasons)
        if found:
            return Decision(Outcome.DENY, ReasonCode.FORBIDDEN, policy_ids=ids, reasons=reasons)
        roles = ", ".join(sorted(principal.roles)) or "no role"
        return Decision(Outcome.DENY, ReasonCode.NO_PERMIT, reasons=(
            f"no control-plane policy lets a {principal.kind.value} with {roles} do "
            f"`{action}`",))

    def require(self, principal: Principal, action: str, resource: Mapping[str, Any], *,
                context: Mapping[str, Any] | None = None, source: str | None = None,
                detail: Mapping[str, Any] | None = None) -> None:
        """Return if allowed; otherwise audit the refusal and raise a 403 problem (500
        ``engine_error`` if the policies could not be evaluated)."""
        decision = self.decide(principal, action, resource, context=context)
        if decision.is_allowed:
            return
        target = f'{resource["uid"]["type"]}::"{resource["uid"]["id"]}"'
        # a failed evaluation is no policy's answer: 500 engine_error, refused all the same
        code: Code = "engine_error" if decision.code is ReasonCode.ENGINE_ERROR \
            else "forbidden"
        self.record_refusal(principal, action, target, code, decision.reasons,
                            policy_ids=decision.policy_ids, source=source, detail=detail)
        raise ApiError(code, "; ".join(decision.reasons), audited=True,
                         extra={"reasons": list(decision.reasons),
                                "policy_ids": list(decision.policy_ids)})

    def record_refusal(self, principal: Principal | None, action: str, target: str, code: Code,
                       reasons: Iterable[str], *, policy_ids: Iterable[str] = (),
                       source: str | None = None,
                       detail: Mapping[str, Any] | None = None) -> None:
        """Write a refusal (a 403) to the audit log; a failure to write is logged, the
        refusal stands either way."""
        if principal is None:
            return
        now = self._clock.now()
        event = AuditEvent(
            id=new_event_id(now), time=now, actor=principal.actor, action=action,
            target=target, outcome="refused", source=source,
            decision=DecisionRecord(Outcome.DENY.value, code, tuple(policy_ids), None,
                                    tuple(reasons)),
            detail=dict(detail or {}),
        )
        try:
            self._audit.record(event)
        except AuditError:
            log.error("a refusal of `%s` could not be audited", action)


def _unique(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for item in entities:
        seen.setdefault((item["uid"]["type"], item["uid"]["id"]), item)
    return list(seen.values())
