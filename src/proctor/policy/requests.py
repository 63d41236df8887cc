"""Decision requests written as data (YAML or JSON), for tests, explain and diff.

A request document::

    agent: spiffe://acme.example/agent/coder     # or principal: {type: Agent, id: ...}
    tool: git/git_log                            # or action: ... and resource: {...}
    args: {repo_path: /srv/repos/app}
    task: task-42                                # optional context fields
    purpose: fix the failing build
    on_behalf_of: alice@acme.example
    delegation_chain: [spiffe://acme.example/agent/planner]
    source_ip: 10.0.0.7
    approved: false
    sensitivity_seen: internal
    grant_constrained: [repo_path]               # arguments the grant constrains
    time: 2026-11-30T10:00:00Z

For a grant issuance, ``action: grant:issue`` with ``resource: {type: Tool, id: …}``
and optional ``ttl_seconds`` and ``max_uses`` (0: no limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from proctor.errors import RequestError
from proctor.policy.catalog import Sensitivity
from proctor.policy.context import call_context, issue_context
from proctor.policy.model import DecisionRequest, EntityRef

__all__ = ["request_from_spec"]

_KEYS = {
    "agent", "principal", "tool", "action", "resource", "args", "task", "purpose",
    "on_behalf_of", "delegation_chain", "source_ip", "approved", "sensitivity_seen", "time",
    "ttl_seconds", "max_uses", "grant_constrained",
}


def request_from_spec(spec: Mapping[str, Any], *, now: datetime) -> DecisionRequest:
    """Build a :class:`DecisionRequest` from a request document; ``now`` unless ``time`` set."""
    if not isinstance(spec, Mapping):
        raise RequestError("a request must be a mapping")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise RequestError(f"request has unknown key `{unknown[0]}`")
    principal = _principal(spec)
    if "tool" in spec:
        tool = str(spec["tool"])
        action, resource = f"tool:{tool}", EntityRef("Tool", tool)
    elif "action" in spec and "resource" in spec:
        action, resource = str(spec["action"]), _ref(spec["resource"], "resource")
    else:
        raise RequestError("a request needs `tool`, or `action` and `resource`")
    args = spec.get("args") or {}
    if not isinstance(args, Mapping):
        raise RequestError("`args` must be a mapping")
    chain = spec.get("delegation_chain") or []
    if not isinstance(chain, list) or not all(isinstance(a, str) for a in chain):
        raise RequestError("`delegation_chain` must be a list of agent ids")
    approved = spec.get("approved", False)
    if not isinstance(approved, bool):
        raise RequestError("`approved` must be true or false")
    if action == "grant:issue":
        context = issue_context(
            now=_time(spec.get("time"), now), task=str(spec.get("task", "")),
            purpose=str(spec.get("purpose", "")), on_behalf_of=str(spec.get("on_behalf_of", "")),
            ttl_seconds=_int(spec, "ttl_seconds", 300),
            max_uses=_int(spec, "max_uses", 0) or None,
            delegation_chain=chain, approved=approved,
        )
        return DecisionRequest(principal, action, resource, context)
    constrained = spec.get("grant_constrained") or []
    if not isinstance(constrained, list) or not all(isinstance(a, str) for a in constrained):
        raise RequestError("`grant_constrained` must be a list of argument names")
    try:
        seen = Sensitivity.parse(str(spec.get("sensitivity_seen", "public")))
    except Exception as exc:
        raise RequestError(str(exc)) from exc
    context = call_context(
        now=_time(spec.get("time"), now),
        args=args,
        task=str(spec.get("task", "")),
        purpose=str(spec.get("purpose", "")),
        on_behalf_of=str(spec.get("on_behalf_of", "")),
        delegation_chain=chain,
        source_ip=spec.get("source_ip"),
        approved=approved,
        sensitivity_seen=seen,
        grant_constrained=constrained,
    )
    return DecisionRequest(principal, action, resource, context)


def _principal(spec: Mapping[str, Any]) -> EntityRef:
    if "agent" in spec:
        return EntityRef("Agent", str(spec["agent"]))
    if "principal" in spec:
        return _ref(spec["principal"], "principal")
    raise RequestError("a request needs `agent` or `principal`")


def _ref(value: Any, what: str) -> EntityRef:
    if isinstance(value, Mapping) and {"type", "id"} <= set(value):
        return EntityRef(str(value["type"]), str(value["id"]))
    raise RequestError(f"`{what}` must be a mapping with `type` and `id`")


def _time(value: Any, default: datetime) -> datetime:
    if value is None:
        return default
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise RequestError(f"time `{value}` is not an ISO 8601 timestamp") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _int(spec: Mapping[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"`{key}` must be an integer")
    return value
