"""An upstream's JSON Schemas (a tool's ``inputSchema`` and ``outputSchema``) made into
validators that can neither reach outside the gateway nor stall it.

A schema is refused (:class:`SchemaRefusedError`, the reason in its message) when:

1. a ``$ref`` (``$dynamicRef``, ``$recursiveRef``) points outside the schema document: anything but
   ``#…``. jsonschema, given no registry, fetches such a reference with ``urlopen``, on
   the event loop, with no time bound, at every validation (an upstream naming
   ``http://169.254.169.254/…`` or ``file:///etc/passwd``);
2. a ``pattern`` or a ``patternProperties`` key does not compile with RE2: JSON Schema
   patterns are ECMA-262, and those RE2 refuses (backreferences, lookaround) have no
   linear-time match. Python's ``re`` backtracks: ``^([a-z0-9]+\\.?)+$`` against
   ``"a" * 34 + "!"`` holds the loop for hours. Nor one :mod:`proctor.gateway.ecma_regex`
   cannot write in RE2's syntax (``(?s:…)``, ``\\p{…}``: RE2 reads them otherwise);
3. ``unevaluatedProperties`` and ``patternProperties`` are both used: jsonschema
   matches the latter with ``re`` on its own while it evaluates the former;
4. a reference within it does not resolve, or its references written out would make it
   a schema of over :data:`~proctor.gateway.schema_work.MAX_EXPANSION` keywords
   (:mod:`proctor.gateway.schema_work`: references make a schema a graph the validator
   walks as a tree, exponential in its depth).

Every validator is built on an empty ``Registry()`` (no retrieval: a reference that does
not resolve within the document fails, it is never fetched), and matches ``pattern``,
``patternProperties`` and the property names ``additionalProperties`` weighs with RE2,
in time linear in the text. ``format`` is not asserted (no format checker), so
``format: regex`` runs nothing. A pattern is read as ECMA-262 and written in RE2's
syntax by :mod:`proctor.gateway.ecma_regex` (RE2's ``\\s``, ``.``, ``[]`` mean other
things; what it cannot write is refused as in 2.); a ``$`` matches at the very end only,
as in ECMA-262 (``re``'s also before a final newline). ``uniqueItems`` is checked in
time linear in the array (jsonschema's is quadratic for objects or mixed types).

Every check (:meth:`SchemaCheck.iter_errors`) runs within a budget of keyword
evaluations scaled to the schema and the instance; one that spends it raises
:class:`SchemaRefusedError` too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend, validator_for
from referencing import Registry
from referencing.jsonschema import specification_with

from proctor.gateway.ecma_regex import PatternRefusedError, translate_pattern
from proctor.gateway.schema_work import (
    Expansion,
    OverBudgetError,
    UnboundedError,
    counted,
    expansion,
    spending,
)

__all__ = ["SchemaCheck", "SchemaRefusedError", "safe_validator"]

log = logging.getLogger(__name__)

_REFS = ("$ref", "$dynamicRef", "$recursiveRef")


class SchemaRefusedError(Exception):
    """A schema the gateway will not evaluate; ``message`` says why (lowercase)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SchemaCheck:
    """A validator of one schema whose every check runs within a work budget."""

    def __init__(self, schema: Mapping[str, Any], validator: Validator,
                 measured: Expansion) -> None:
        self.schema = schema
        self._validator = validator
        self._expansion = measured

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every way ``instance`` breaks the schema, found before the first is given;
        raises :class:`SchemaRefusedError` if finding them spends the check's budget
        (and ``referencing``'s ``Unresolvable`` as jsonschema does)."""
        try:
            with spending(self._expansion, instance):
                return iter(list(self._validator.iter_errors(instance)))
        except OverBudgetError as exc:
            raise SchemaRefusedError(exc.message) from None

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` is valid (it stops at the first error); raises as
        :meth:`iter_errors`."""
        try:
            with spending(self._expansion, instance):
                return next(iter(self._validator.iter_errors(instance)), None) is None
        except OverBudgetError as exc:
            raise SchemaRefusedError(exc.message) from None


def safe_validator(schema: Mapping[str, Any], *,
                   default: type[Validator] = Draft202012Validator) -> SchemaCheck:
    """A validator of ``schema`` (its draft from ``$schema``, else ``default``).

    Raises :class:`SchemaRefusedError` (see the module) or jsonschema's ``SchemaError``
    (not a schema of its draft)."""
    cls = validator_for(schema, default=default)
    cls.check_schema(schema)
    _refuse(schema)
    dialect = cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id") or ""
    try:
        measured = expansion(schema, specification_with(dialect))
    except UnboundedError as exc:
        raise SchemaRefusedError(exc.message) from None
    except Exception as exc:  # referencing's own refusal of a reference: refused here too
        raise SchemaRefusedError(f"its references cannot be followed "
                                 f"({type(exc).__name__})") from None
    return SchemaCheck(schema, _linear(cls)(schema, registry=Registry()), measured)


def _refuse(schema: Any) -> None:
    """Raises :class:`SchemaRefusedError` for the first thing in ``schema`` the module refuses."""
    found = {"unevaluatedProperties": False, "patternProperties": False}
    for key, value in _keywords(schema):
        if key in _REFS and isinstance(value, str) and not value.startswith("#"):
            raise SchemaRefusedError(f"`{key}` to `{value[:200]}` is outside the schema: only "
                                "references within it (`#…`) are followed")
        if key == "pattern" and isinstance(value, str):
            _compiled(value)
        if key == "patternProperties" and isinstance(value, Mapping):
            for pattern in value:
                _compiled(str(pattern))
        if key in found:
            found[key] = True
    if all(found.values()):
        raise SchemaRefusedError("`unevaluatedProperties` beside `patternProperties` is not "
                            "evaluated here")


def _keywords(schema: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every object in ``schema``, data (``enum``, ``default``) and
    property names too: told apart from keywords only by where they stand, which a
    walk that skipped them would get wrong (a property named ``default``). Its depth
    is bounded by the caller's nesting check."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                yield str(key), value
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    """``pattern`` (ECMA-262) compiled by RE2, or :class:`SchemaRefusedError`."""
    options = re2.Options()
    options.log_errors = False  # the reason is ours to report, not RE2's on stderr
    options.never_capture = True
    try:
        return re2.compile(translate_pattern(pattern), options)
    except PatternRefusedError as exc:
        raise SchemaRefusedError(f"pattern `{pattern[:200]}` {exc.reason}") from None
    except re2.error:
        raise SchemaRefusedError(f"pattern `{pattern[:200]}` has no linear-time match (RE2 "
                            "cannot compile it: a backreference, a lookaround, a "
                            "repetition over 1000...)") from None


_NO_MATCH = (-1, -1)


def _search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text``. The compiled RE2 object is
    asked directly when google-re2 still has the private calls that allow it (its own
    ``search`` maps every offset back to characters and makes a match object: five
    times the cost, and a call may search each of its property names twice); else its
    public ``search``. tests/gateway/test_schemas.py fails when the direct way is lost."""
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        # a lone surrogate (valid JSON: "\\ud800"): one character, as in ECMA-262,
        # where `.` and `[^a]` match it; RE2 reads its three bytes as one code point
        if _DIRECT is None:  # the public search cannot take it: refused, not guessed
            raise SchemaRefusedError("a lone surrogate cannot be searched here") from None
        encoded = text.encode("utf-8", "surrogatepass")
    if _DIRECT is None:
        return _compiled(pattern).search(text) is not None
    spans = _compiled(pattern)._regexp.Match(_DIRECT, encoded, 0, len(encoded))
    return bool(spans[0] != _NO_MATCH)


def _direct_anchor() -> Any:
    """google-re2's unanchored mode, if its private calls answer as :func:`_search`
    reads them (tried once, on patterns whose answers are known), else None."""
    try:
        anchor = re2._Anchor.UNANCHORED
        regexp = _compiled("^[a-z]+$")._regexp
        if (regexp.Match(anchor, b"abc", 0, 3)[0] == (0, 3)
                and regexp.Match(anchor, b"ab1", 0, 3)[0] == _NO_MATCH):
            return anchor
    except Exception:  # any change of a private API: the public one
        log.warning("google-re2's private calls changed: patterns are searched through "
                    "its public API")
    return None


_DIRECT = _direct_anchor()


# jsonschema's own keywords, with RE2 in place of `re` (their messages name no value)

def _pattern(validator: Any, pattern: str, instance: Any, schema: Any
             ) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any
                           ) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [key for key in instance if key not in known
              and not any(_search(pattern, key) for pattern in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"{len(extras)} properties are not allowed")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any
                  ) -> Iterator[ValidationError]:
    """jsonschema's compares items pairwise when they do not sort (objects, or a mix of
    types, whatever the items' schema): 2,000 objects took half a minute, and an
    argument of a megabyte holds a hundred thousand. Here each item is made a hashable
    key once, equal as JSON Schema has it (``1`` is ``1.0``, ``true`` is not ``1``)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _json_key(item)
        if key in seen:
            yield ValidationError("has non-unique elements")
            return
        seen.add(key)


def _json_key(value: Any) -> Any:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, Mapping):
        return ("o", frozenset((k, _json_key(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("a", tuple(_json_key(v) for v in value))
    return ("z", value)  # null


@functools.cache
def _linear(cls: type[Validator]) -> type[Validator]:
    """``cls`` with RE2 for its pattern keywords and a linear ``uniqueItems``, every
    keyword spending the budget of the check in force (each draft's class made once)."""
    keywords = {"pattern": _pattern, "patternProperties": _pattern_properties,
                "additionalProperties": _additional_properties,
                "uniqueItems": _unique_items}
    mine = {**cls.VALIDATORS, **{k: v for k, v in keywords.items() if k in cls.VALIDATORS}}
    spending_ones = {k: counted(v, k) for k, v in mine.items()}
    made: type[Validator] = extend(cls, spending_ones)  # type: ignore[no-untyped-call]
    return made
