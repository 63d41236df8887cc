"""Whether a request has the schema's type, proven in Python so that Cedar need not check it.

Given the schema, Cedar checks every request against it before evaluating: the principal
and resource types the action applies to, and the whole context, value by value. That
check was the largest single cost of a decision (about 90 µs of 260 on the decision
bench), and on the decision path it repeats work proctor has done: the context is built
by :func:`~proctor.policy.context.call_context` (or ``issue_context``) and the arguments
are checked against the tool's type by :meth:`ArgShape.project
<proctor.policy.arguments.ArgShape.project>` before Cedar sees them.

:func:`conforms` proves, cheaply, that a request Cedar would accept has the schema's
type; then the engine evaluates it without the schema, and Cedar reads the values as the
schema would (nothing in a conforming context depends on the schema to be read: no
entity references, the one extension value written out as ``{"__extn": …}``, no record
whose keys Cedar would take for an escape). When it cannot prove it (anything unusual:
an unknown action, another principal type, a missing or extra field, a tuple for a
list, a float, a lone surrogate) it answers False, and Cedar checks the request against
the schema as before, so a request that does not conform gets the same deny as before. The
differential test (``tests/policy/test_request_conformance.py``) holds both paths to the
same decisions on the decision bench's workloads and on generated requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from proctor.documents import is_unicode_text
from proctor.policy.arguments import ArgShape

__all__ = ["conforms", "projectable"]

Check = Callable[[Any], bool]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
# keys Cedar's JSON reads as an escape (an entity, an extension call, an expression)
_ESCAPES = frozenset({"__entity", "__extn", "__expr"})


def _string(value: Any) -> bool:
    # a lone surrogate ("\ud800") is a Python string but no text: Cedar refuses the
    # request that holds one (failed to build request), schema or not
    return type(value) is str and is_unicode_text(value)


def _long(value: Any) -> bool:
    return type(value) is int and _LONG_MIN <= value <= _LONG_MAX


def _bool(value: Any) -> bool:
    return type(value) is bool


def _strings(value: Any) -> bool:
    return type(value) is list and all(_string(v) for v in value)


def _ip(value: Any) -> bool:
    """``ipaddr`` as the context writes it; whether the address parses is Cedar's to
    say, with or without the schema (the same ``failed to build request``)."""
    if type(value) is not dict or len(value) != 1:
        return False
    call = value.get("__extn")
    return (type(call) is dict and len(call) == 2 and call.get("fn") == "ip"
            and type(call.get("arg")) is str)


def _record(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None
            ) -> Check:
    """A record with exactly the ``required`` fields and any of the ``optional`` ones."""
    optional = optional or {}
    size = len(required)

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for name, field in required.items():
            if name not in value or not field(value[name]):
                return False
        extra = len(value) - size
        for name, field in optional.items():
            if extra and name in value:
                if not field(value[name]):
                    return False
                extra -= 1
        return extra == 0

    return check


_DELEGATION = _record({"depth": _long, "chain": _strings})
_TIME = _record({"epoch": _long, "hour": _long, "weekday": _long})
_COMMON = {"task": _string, "purpose": _string, "on_behalf_of": _string,
           "delegation": _DELEGATION, "time": _TIME, "approved": _bool}
# `args` is left out: ArgShape.project made it, and only a projected value gets here
_CALL_RECORD = _record({**_COMMON, "sensitivity_seen": _long,
                        "grant": _record({"constrained": _strings}), "args": lambda _: True},
                       {"source_ip": _ip})


def _call(value: Any) -> bool:
    """:data:`_CALL_RECORD`, written out: the same answer for every value (a test holds
    them to it), at a fraction of its cost, for it runs on every call."""
    if type(value) is not dict:
        return False
    size = len(value)
    if size != 9 and (size != 10 or "source_ip" not in value or not _ip(value["source_ip"])):
        return False
    try:
        task, purpose, on_behalf_of = value["task"], value["purpose"], value["on_behalf_of"]
        delegation, time, grant = value["delegation"], value["time"], value["grant"]
        approved, seen = value["approved"], value["sensitivity_seen"]
        value["args"]  # present: any value (projected)
    except KeyError:
        return False
    if type(task) is not str or type(purpose) is not str or type(on_behalf_of) is not str \
            or type(approved) is not bool:
        return False
    if type(delegation) is not dict or len(delegation) != 2 or type(time) is not dict \
            or len(time) != 3 or type(grant) is not dict or len(grant) != 1:
        return False
    try:
        depth, chain = delegation["depth"], delegation["chain"]
        epoch, hour, weekday = time["epoch"], time["hour"], time["weekday"]
        constrained = grant["constrained"]
    except KeyError:
        return False
    if type(depth) is not int or type(epoch) is not int or type(hour) is not int \
            or type(weekday) is not int or type(seen) is not int \
            or min(depth, epoch, hour, weekday, seen) < _LONG_MIN \
            or max(depth, epoch, hour, weekday, seen) > _LONG_MAX \
            or type(chain) is not list or type(constrained) is not list:
        return False
    texts = [task, purpose, on_behalf_of, *chain, *constrained]
    for text in texts:
        if type(text) is not str:
            return False
    # one pass over them all when ASCII (the usual case): a lone surrogate is not
    return "".join(texts).isascii() or all(map(is_unicode_text, texts))


_CALL = _call
_ISSUE = _record({**_COMMON, "ttl_seconds": _long, "max_uses": _long,
                  "has_use_limit": _bool})
ISSUE_ACTION = "grant:issue"


def projectable(shape: ArgShape) -> bool:
    """Whether every value :meth:`ArgShape.project` makes of ``shape`` reads the same in
    Cedar with and without the schema: no record of it has a field named like an escape."""
    if shape.kind == "set":
        return shape.item is not None and projectable(shape.item)
    if shape.kind == "record":
        return not (_ESCAPES & set(shape.fields)) and all(
            projectable(sub) for sub, _ in shape.fields.values())
    return True


def conforms(action: str, principal_type: str, resource_type: str,
             context: Any, *, projected: bool) -> bool:
    """Whether Cedar, given the schema, would accept this request as well-typed.

    ``projected``: the context's ``args`` were made by the action's own
    :meth:`ArgShape.project` and the shape is :func:`projectable` (the caller knows;
    without it, a tool call's context is not proven). ``action`` is a tool's action
    id or ``grant:issue``; any other action is not proven here.
    """
    if principal_type != "Agent" or resource_type != "Tool":
        return False
    if action == ISSUE_ACTION:
        return _ISSUE(context)
    return projected and _CALL(context)
