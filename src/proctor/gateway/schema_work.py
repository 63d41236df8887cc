"""How much work an upstream's JSON Schema may make the gateway do: measured once per
schema when it is listed, and counted at every check.

References within a schema make it a graph, and the validator walks that graph as if
every reference were written out in full: ``$defs`` ``a0``…``a16`` where each ``aN`` is
``{"allOf": [{"$ref": "#/$defs/aN+1"}, {"$ref": "#/$defs/aN+1"}]}`` is a few hundred
bytes, and 2^17 subschemas to evaluate against one argument (seconds on the event loop,
every session waiting). So:

1. at listing, :func:`expansion` counts the keywords of the schema with every reference
   written out (each subschema counted once per place it is reached from; a reference
   back into a subschema it is reached through, recursion, counts one: the instance's
   depth bounds it). A reference that does not resolve within the schema, or an
   expansion over :data:`MAX_EXPANSION`, refuses the schema (the tool is hidden);
2. at every check, :func:`spending` allows the expansion plus :data:`PER_NODE` per
   value of the instance, and every keyword the validator evaluates spends one (:func:`counted`
   wraps each). ``unevaluatedProperties`` and ``unevaluatedItems`` walk the schema
   beside the keywords (jsonschema follows references there on its own): each spends
   the expansion of the subschema it stands in. When nothing is left the check raises
   :class:`OverBudgetError`: the recursion an instance's depth drives (``items`` and
   ``contains`` of ``$ref: "#"`` doubles at each level of a nested array) is stopped
   there too.

A keyword evaluated with no check in force raises too: every check goes through
:func:`spending` (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from referencing import Registry, Specification
from referencing.exceptions import Unresolvable

__all__ = ["MAX_EXPANSION", "PER_NODE", "Expansion", "OverBudgetError", "UnboundedError",
           "counted", "expansion", "spending"]

MAX_EXPANSION = 10_000
"""Keywords a schema may hold with its references written out: above what a tool's
arguments or answer need (a model of dozens of types, each reached from several places,
holds a few thousand), far below what an exponential one reaches. Evaluating as many,
references all, held the loop 0.18 s with the machine's two cores thirty times
oversubscribed."""
PER_NODE = 100
"""Keyword evaluations a check may spend per value of its instance, beyond the
schema's expansion."""

# keywords whose value is a subschema, a list of them, or an object of them (every draft)
_ONE = frozenset({"additionalItems", "additionalProperties", "contains", "contentSchema",
                  "else", "if", "items", "not", "propertyNames", "then", "unevaluatedItems",
                  "unevaluatedProperties"})
_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_OBJECT = frozenset({"properties", "patternProperties", "dependentSchemas", "dependencies"})
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
_WALKING = frozenset({"unevaluatedItems", "unevaluatedProperties"})
_MAX_LEVELS = 100


class UnboundedError(Exception):
    """A schema the gateway will not evaluate for the work it could take; ``message``
    says why (lowercase)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OverBudgetError(Exception):
    """A check that spent its budget (``allowed`` keyword evaluations) and was stopped."""

    def __init__(self, allowed: int) -> None:
        super().__init__(f"evaluating it took over {allowed} steps, the budget of this check")
        self.allowed = allowed
        self.message = str(self)


@dataclass(frozen=True, slots=True)
class Expansion:
    """A schema's keywords with its references written out: in all (``total``), and
    from each of its subschemas (by the subschema's ``id``, while the schema lives)."""

    total: int
    of: Mapping[int, int] = field(repr=False)


def expansion(schema: Any, specification: Specification[Any]) -> Expansion:
    """The :class:`Expansion` of ``schema`` (its draft's ``specification``); raises
    :class:`UnboundedError` for a reference within it that does not resolve, or an
    expansion over :data:`MAX_EXPANSION`. Each subschema is measured once: time linear
    in the schema as written."""
    resolver = Registry().resolver_with_root(specification.create_resource(schema))
    measured: dict[int, int] = {}
    _measure(schema, resolver, specification, measured, [])
    return Expansion(measured.get(id(schema), 1), measured)


def _measure(schema: Any, resolver: Any, specification: Specification[Any],
             measured: dict[int, int], active: list[int]) -> int:
    if not isinstance(schema, Mapping):
        return 1  # true, false
    key = id(schema)
    if key in measured:
        return measured[key]
    if key in active:
        return 1  # recursion: the instance's depth (and the budget) bounds it
    if len(active) >= _MAX_LEVELS:  # a chain of references: the validator recurses as deep
        raise UnboundedError(f"its references nest subschemas over {_MAX_LEVELS} deep")
    active.append(key)
    resolver = resolver.in_subresource(specification.create_resource(schema))
    total = len(schema)
    for name, value in schema.items():
        subschemas: list[Any] = []
        if name in _REFS and isinstance(value, str):
            try:
                resolved = resolver.lookup("#" if name == "$recursiveRef" else value)
            except Unresolvable:
                raise UnboundedError(f"`{name}` to `{value[:200]}` does not resolve within "
                                     "the schema") from None
            total += _measure(resolved.contents, resolved.resolver, specification, measured,
                              active)
            continue
        if name in _ONE and isinstance(value, Mapping | bool):
            subschemas = [value]
        elif name in _LIST and isinstance(value, list):
            subschemas = value
        elif name in _OBJECT and isinstance(value, Mapping):
            subschemas = [v for v in value.values() if isinstance(v, Mapping | bool)]
        for subschema in subschemas:
            total += _measure(subschema, resolver, specification, measured, active)
        if total > MAX_EXPANSION:
            raise UnboundedError(f"with its references written out it holds over "
                                 f"{MAX_EXPANSION} keywords (they are evaluated as if it did)")
    active.pop()
    measured[key] = total
    return total


@dataclass(slots=True)
class _Budget:
    left: int
    allowed: int
    instance: Any
    expansion: Expansion
    sized: bool = False


_BUDGET: ContextVar[_Budget | None] = ContextVar("proctor_schema_budget", default=None)
_FIRST_NODES = 16  # what a check may spend before its instance is measured


class spending:  # noqa: N801 (a context manager, named for what its block does)
    """A check of ``instance`` against a schema of ``schema_expansion`` in force: the
    keywords evaluated within spend its budget. The instance is measured only if the
    check spends more than a small one's share (most never do). A class, not a
    generator: it is entered on every call's check."""

    __slots__ = ("_budget", "_token")

    def __init__(self, schema_expansion: Expansion, instance: Any) -> None:
        allowed = schema_expansion.total + PER_NODE * _FIRST_NODES
        self._budget = _Budget(allowed, allowed, instance, schema_expansion)

    def __enter__(self) -> None:
        self._token = _BUDGET.set(self._budget)

    def __exit__(self, *exc: object) -> None:
        _BUDGET.reset(self._token)


_Keyword = Callable[[Any, Any, Any, Any], Any]


def counted(keyword: _Keyword, name: str) -> _Keyword:
    """``keyword`` (a jsonschema keyword function) spending the budget in force."""
    if name in _WALKING:
        def walking(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
            budget = _BUDGET.get()
            if budget is None:
                raise OverBudgetError(0)  # fail closed: a check outside any budget
            budget.left -= budget.expansion.of.get(id(schema), budget.expansion.total)
            if budget.left < 0:
                _widen(budget)
            return keyword(validator, value, instance, schema)

        return walking

    def spend(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        budget = _BUDGET.get()
        if budget is None:
            raise OverBudgetError(0)  # fail closed: a check outside any budget
        budget.left -= 1
        if budget.left < 0:
            _widen(budget)
        return keyword(validator, value, instance, schema)

    return spend


def _widen(budget: _Budget) -> None:
    """The budget grown to the instance's size once it is measured, or
    :class:`OverBudgetError`."""
    if not budget.sized:
        budget.sized = True
        more = PER_NODE * (_nodes(budget.instance) - _FIRST_NODES)
        if more > 0:
            budget.left += more
            budget.allowed += more
    if budget.left < 0:
        raise OverBudgetError(budget.allowed)


def _nodes(instance: Any) -> int:
    """The values in ``instance`` (each object's keys too), walked without recursing."""
    count = 0
    stack = [instance]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, Mapping):
            count += len(node)
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return count
