"""What a grant allows: tools, and constraints on their arguments.

A scope is checked by proctor itself against each call (and its claims go into
the policy context); grants are never turned into Cedar policies, since Cedar
scans policies linearly.

A scope document, as carried in the token's ``scope`` claim::

    {"tools": [
      {"tool": "git/git_log", "args": {"repo_path": {"prefix": ["/srv/repos/app"]}}},
      {"tool": "time/*"},
      {"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 5000}}}
    ]}

``tool`` is ``server/tool``, ``server/*`` or ``*``. An argument constraint is
one of ``in`` (allowed values, compared exactly, type included), ``prefix``
(strings under one of these, as a path: :mod:`proctor.grants.prefixes`) or a
range of integers, ``min`` and/or ``max`` — ``max`` alone is from 0, never
negative, and only a JSON integer passes a range (not ``true``, ``5000.0`` or
``"5000"``); a constrained argument must be present.
An argument that is a list (an email's recipients) is allowed when it has items
and each of them is.
Narrowing — delegation — is checked with :meth:`GrantScope.covers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proctor.errors import ScopeError
from proctor.grants.prefixes import has_control, is_clean, prefix_allows, prefix_covers

__all__ = ["ArgConstraint", "GrantScope", "ToolScope", "expand_scope", "wildcards_of"]

_MAX_TOOLS = 256
Scalar = str | int | bool
# the largest integer every JSON reader holds exactly (a double's 53 bits): a range
# bound past it would mean one thing to proctor and another to a JavaScript upstream
MAX_SAFE_INTEGER = 2**53 - 1
_RANGE = frozenset({"min", "max"})


@dataclass(frozen=True, slots=True)
class ArgConstraint:
    """One argument's limit: ``one_of``, ``prefixes``, or a range (``min``, ``max``).

    A range holds integers only, from ``min`` to ``max``; ``max`` without ``min`` is
    from 0 (:func:`low`). ``min`` without ``max`` has no ceiling.
    """

    one_of: frozenset[Scalar] | None = None
    prefixes: tuple[str, ...] | None = None
    max: int | None = None
    min: int | None = None

    @property
    def low(self) -> int:
        """The range's floor: ``min``, else 0 — ``max`` alone never allows a negative."""
        return self.min if self.min is not None else 0

    def allows(self, value: Any) -> bool:
        if isinstance(value, list):  # empty: no value to check, so none allowed
            return bool(value) and all(self._allows_item(item) for item in value)
        return self._allows_item(value)

    def _allows_item(self, value: Any) -> bool:
        if self.one_of is not None:
            # `True == 1` in Python: compare types too, so `in: [1]` does not allow `true`
            return isinstance(value, Scalar) and any(
                type(value) is type(v) and value == v for v in self.one_of)
        if self.prefixes is not None:
            return isinstance(value, str) and prefix_allows(self.prefixes, value)
        # an integer, exactly: not a bool, a float (5000.0, nan, inf, -0.0) nor "5000"
        return type(value) is int and self.low <= value and (
            self.max is None or value <= self.max)

    def covers(self, child: ArgConstraint) -> bool:
        """True if every value ``child`` allows, this allows too."""
        if child.one_of is not None:
            return all(self.allows(v) for v in child.one_of)
        if child.prefixes is not None:
            if self.prefixes is None:
                return False
            return all(prefix_covers(self.prefixes, c) for c in child.prefixes)
        if self.one_of is not None or self.prefixes is not None:
            return False
        return child.low >= self.low and (
            self.max is None or (child.max is not None and child.max <= self.max))

    def as_json(self) -> dict[str, Any]:
        if self.one_of is not None:
            return {"in": sorted(self.one_of, key=repr)}
        if self.prefixes is not None:
            return {"prefix": list(self.prefixes)}
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}

    @classmethod
    def from_json(cls, name: str, data: Any) -> ArgConstraint:
        if not isinstance(data, Mapping) or not data or not (
                len(data) == 1 or set(data) <= _RANGE):
            raise ScopeError(f"constraint on `{name}` must have exactly one of in, prefix, "
                             "or a range: max, min, or both")
        if set(data) <= _RANGE:
            return cls._range(name, data)
        kind, value = next(iter(data.items()))
        if kind == "in" and isinstance(value, list) and value and all(
            isinstance(v, Scalar) and (type(v) is not int or abs(v) <= MAX_SAFE_INTEGER)
            for v in value
        ):
            return cls(one_of=frozenset(value))
        if kind == "prefix" and isinstance(value, list) and value and all(
            isinstance(v, str) and v for v in value
        ):
            bad = next((v for v in value if not is_clean(v)), None)
            if bad is not None:
                raise ScopeError(f"prefix `{bad[:80]!r}` on `{name}` holds a control "
                                 "character or a `..` segment")
            return cls(prefixes=tuple(value))
        raise ScopeError(f"constraint `{kind}` on `{name}` is not valid")

    @classmethod
    def _range(cls, name: str, data: Mapping[str, Any]) -> ArgConstraint:
        for kind, value in data.items():
            if type(value) is not int or abs(value) > MAX_SAFE_INTEGER:
                raise ScopeError(f"constraint `{kind}` on `{name}` is not valid: a whole "
                                 f"number from -{MAX_SAFE_INTEGER} to {MAX_SAFE_INTEGER}")
        found = cls(max=data.get("max"), min=data.get("min"))
        if found.max is not None and found.max < found.low:
            floor = "`min`" if found.min is not None else "0 (`max` alone is from 0: " \
                "add a `min` to allow negative values)"
            raise ScopeError(f"constraint `max` on `{name}` is below {floor}")
        return found


@dataclass(frozen=True, slots=True)
class ToolScope:
    tool: str
    args: Mapping[str, ArgConstraint] = field(default_factory=dict)

    @property
    def is_wildcard(self) -> bool:
        return self.tool == "*" or self.tool.endswith("/*")

    def matches_tool(self, tool_id: str) -> bool:
        if self.tool == "*" or self.tool == tool_id:
            return True
        return self.tool.endswith("/*") and tool_id.startswith(self.tool[:-1])

    def allows(self, tool_id: str, args: Mapping[str, Any]) -> bool:
        return self.matches_tool(tool_id) and all(
            name in args and c.allows(args[name]) for name, c in self.args.items()
        )

    def covers(self, child: ToolScope) -> bool:
        if self.tool == "*":
            tool_ok = True
        elif self.tool.endswith("/*"):
            tool_ok = child.tool != "*" and child.tool.startswith(self.tool[:-1])
        else:
            tool_ok = child.tool == self.tool
        return tool_ok and all(
            name in child.args and c.covers(child.args[name]) for name, c in self.args.items()
        )


@dataclass(frozen=True, slots=True)
class GrantScope:
    """The tools a grant allows, each with its argument constraints."""

    tools: tuple[ToolScope, ...]

    def allows(self, tool_id: str, args: Mapping[str, Any]) -> bool:
        """True if some entry allows calling ``tool_id`` with ``args``."""
        return any(t.allows(tool_id, args) for t in self.tools)

    def constrained(self, tool_id: str, args: Mapping[str, Any]) -> frozenset[str] | None:
        """The arguments every entry that allows calling ``tool_id`` with ``args``
        constrains (with two entries, one pinning ``recipient`` and one not, the call is
        not bound to a recipient); None if no entry allows it (:meth:`allows` is False).
        A call's check and its policy context (``context.grant.constrained``) in one
        pass over the entries."""
        found: frozenset[str] | None = None
        for entry in self.tools:
            if entry.allows(tool_id, args):
                names = frozenset(entry.args)
                found = names if found is None else found & names
        return found

    def names(self, tool_id: str) -> bool:
        """True if some entry is for ``tool_id`` (whatever it says of the arguments)."""
        return any(t.matches_tool(tool_id) for t in self.tools)

    def covers(self, child: GrantScope) -> bool:
        """True if ``child`` is no wider than this scope (each entry inside one of ours)."""
        return all(any(mine.covers(theirs) for mine in self.tools) for theirs in child.tools)

    def as_json(self) -> dict[str, Any]:
        return {"tools": [
            {"tool": t.tool, **({"args": {n: c.as_json() for n, c in sorted(t.args.items())}}
                                if t.args else {})}
            for t in self.tools
        ]}

    @classmethod
    def from_request(cls, data: Any) -> GrantScope:
        """Parse a scope document as asked for (issuance, an offer, an exchange, the CLI):
        as :meth:`from_json`, and a key it does not know, at the top or in an entry, is
        refused by name rather than dropped (an entry's misspelt ``argz`` dropped was a
        grant without the constraints asked for; an unknown top-level key could carry
        any value: NaN, 10**400, a NUL), as are a control character in a tool or
        argument name and a NUL in an ``in`` value. Stored forms keep more beside the
        scope (an offer's ``wild`` and ``parent``): they are read by :meth:`from_json`."""
        if isinstance(data, Mapping):
            _only_known(data, _DOCUMENT_KEYS, "a scope")
            tools = data.get("tools")
            for item in tools[:_MAX_TOOLS + 1] if isinstance(tools, list) else ():
                if isinstance(item, Mapping):
                    _only_known(item, _ENTRY_KEYS, "a scope entry")
                    _clean_name(item.get("tool"), "tool")
                    args = item.get("args")
                    for name, constraint in args.items() if isinstance(args, Mapping) else ():
                        _clean_name(name, "argument")
                        values = constraint.get("in") if isinstance(constraint, Mapping) \
                            else None
                        if isinstance(values, list) and any(
                                isinstance(v, str) and "\x00" in v for v in values):
                            raise ScopeError(f"constraint `in` on `{_shown(name)}` holds a "
                                             "NUL character")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Any) -> GrantScope:
        """Parse a scope document; raises :class:`ScopeError` naming the problem."""
        tools = data.get("tools") if isinstance(data, Mapping) else None
        if not isinstance(tools, list) or not tools:
            raise ScopeError("a scope needs a non-empty `tools` list")
        if len(tools) > _MAX_TOOLS:
            raise ScopeError(f"a scope may name at most {_MAX_TOOLS} tools")
        entries = []
        for item in tools:
            if not isinstance(item, Mapping) or not isinstance(item.get("tool"), str):
                raise ScopeError("each scope entry needs a `tool` string")
            tool = item["tool"]
            if tool != "*" and (tool.count("/") != 1 or tool.startswith("/")
                                or ("*" in tool and not tool.endswith("/*"))):
                raise ScopeError(f"tool `{tool}` must be `server/tool`, `server/*` or `*`")
            args = item.get("args") or {}
            if not isinstance(args, Mapping):
                raise ScopeError(f"`args` of `{tool}` must be a mapping")
            entries.append(ToolScope(tool, {str(n): ArgConstraint.from_json(str(n), c)
                                            for n, c in args.items()}))
        return cls(tuple(entries))


_DOCUMENT_KEYS = frozenset({"tools"})
_ENTRY_KEYS = frozenset({"tool", "args"})


def _shown(value: object) -> str:
    """A key or name as an error may quote it: short, control characters escaped."""
    return str(value)[:40].encode("unicode_escape").decode("ascii")


def _only_known(data: Mapping[Any, Any], known: frozenset[str], what: str) -> None:
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ScopeError(f"{what} has an unknown key `{_shown(unknown[0])}` (it takes "
                         f"{', '.join(f'`{k}`' for k in sorted(known))})")


def _clean_name(name: object, what: str) -> None:
    if isinstance(name, str) and has_control(name):
        raise ScopeError(f"{what} name `{_shown(name)}` holds a control character")


def expand_scope(scope: GrantScope, tools: Sequence[str]) -> GrantScope:
    """``scope`` with each wildcard entry replaced by one entry per tool of ``tools`` it
    matches, with the same argument constraints: a grant covers exactly the tools that
    were known, and decided, when it was issued — never one that appears later.

    >>> expand_scope(GrantScope.from_json({"tools": [{"tool": "time/*"}]}),
    ...              ["time/now", "git/log", "time/convert"]).as_json()
    {'tools': [{'tool': 'time/now'}, {'tool': 'time/convert'}]}
    """
    entries: list[ToolScope] = []
    for entry in scope.tools:
        matched = [t for t in tools if entry.matches_tool(t)]
        if not matched:
            raise ScopeError(f"scope entry `{entry.tool}` matches no known tool")
        entries.extend(ToolScope(t, entry.args) for t in matched)
    unique = list({(e.tool, repr(sorted((n, c.as_json()) for n, c in e.args.items()))): e
                   for e in entries}.values())
    if len(unique) > _MAX_TOOLS:
        raise ScopeError(f"the scope covers {len(unique)} tools; a grant covers at most "
                         f"{_MAX_TOOLS}: name the tools the task needs")
    return GrantScope(tuple(unique))


def wildcards_of(scope: GrantScope) -> GrantScope | None:
    """The wildcard entries of ``scope``, as asked for (None if it has none)."""
    wild = tuple(e for e in scope.tools if e.is_wildcard)
    return GrantScope(wild) if wild else None
