"""Typing a tool's arguments for Cedar, from the tool's JSON Schema ``inputSchema``.

Policies constrain ``context.args``; the validator needs its type, and every
request's arguments must be checked against that type before Cedar sees them.

Mapping: ``string`` → ``String`` (enums too), ``integer`` → ``Long``,
``boolean`` → ``Bool``, ``array`` of a mappable item → ``Set``, ``object`` with
``properties`` → a record. A nullable type (``anyOf``/``oneOf`` of one type and
``null``, or ``type: [T, "null"]``, as pydantic and so FastMCP write an
``Optional`` parameter) is that type, optional, and a ``null`` value is an absent
one; a local ``$ref`` (``#/$defs/…``, as pydantic writes an enum) is followed.
Anything else (``number``, other unions, free-form objects) has no faithful Cedar
type: such an argument is left out of ``context.args``, so a policy cannot name
it, and the validator says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from proctor.errors import RequestError

__all__ = ["ArgShape", "shape_from_json_schema"]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

Kind = Literal["string", "long", "bool", "set", "record"]


@dataclass(frozen=True, slots=True)
class ArgShape:
    """The Cedar type of an argument value."""

    kind: Kind
    item: ArgShape | None = None
    fields: Mapping[str, tuple[ArgShape, bool]] = field(default_factory=dict)
    nullable: frozenset[str] = frozenset()  # fields whose null value means absent

    def to_cedar(self) -> str:
        """This type in Cedar schema syntax."""
        if self.kind == "string":
            return "String"
        if self.kind == "long":
            return "Long"
        if self.kind == "bool":
            return "Bool"
        if self.kind == "set":
            assert self.item is not None
            return f"Set<{self.item.to_cedar()}>"
        attrs = ", ".join(
            f"{json.dumps(name)}{'' if required else '?'}: {shape.to_cedar()}"
            for name, (shape, required) in sorted(self.fields.items())
        )
        return "{" + attrs + "}"

    def project(self, value: Any, path: str = "args") -> Any:
        """Check ``value`` against this type and drop untyped attributes.

        Raises :class:`RequestError` naming the argument when the value does not fit.
        """
        if self.kind == "string" and isinstance(value, str):
            return value
        if self.kind == "long" and isinstance(value, int) and not isinstance(value, bool):
            if not _LONG_MIN <= value <= _LONG_MAX:
                raise RequestError(f"argument `{path}` is out of range for a Long")
            return value
        if self.kind == "bool" and isinstance(value, bool):
            return value
        if self.kind == "set" and isinstance(value, list):
            assert self.item is not None
            return [self.item.project(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.kind == "record" and isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for name, (shape, required) in self.fields.items():
                if name in self.nullable and value.get(name) is None:
                    continue
                if name in value:
                    out[name] = shape.project(value[name], f"{path}.{name}")
                elif required:
                    raise RequestError(f"argument `{path}.{name}` is required")
            return out
        raise RequestError(f"argument `{path}` must be of type {self.to_cedar()}")


EMPTY_RECORD = ArgShape("record")


def shape_from_json_schema(schema: Mapping[str, Any] | None) -> ArgShape:
    """The record type for a tool's ``inputSchema`` (an empty record when absent)."""
    if not schema:
        return EMPTY_RECORD
    shape = _shape(schema, schema, depth=0)
    return shape if shape is not None and shape.kind == "record" else EMPTY_RECORD


def _shape(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> ArgShape | None:
    if depth > 16:
        return None
    schema, _ = _unwrap(schema, root, depth)
    kind = schema.get("type")
    if kind == "string":
        return ArgShape("string")
    if kind == "integer":
        return ArgShape("long")
    if kind == "boolean":
        return ArgShape("bool")
    if kind == "array":
        items = schema.get("items")
        item = _shape(items, root, depth + 1) if isinstance(items, Mapping) else None
        return ArgShape("set", item=item) if item is not None else None
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return ArgShape("record") if depth == 0 else None
        required = set(schema.get("required") or ())
        fields: dict[str, tuple[ArgShape, bool]] = {}
        nullable: set[str] = set()
        for name, sub in props.items():
            if not isinstance(sub, Mapping):
                continue
            sub_shape = _shape(sub, root, depth + 1)
            if sub_shape is None:
                continue
            is_nullable = _unwrap(sub, root, depth + 1)[1]
            fields[str(name)] = (sub_shape, name in required and not is_nullable)
            if is_nullable:
                nullable.add(str(name))
        return ArgShape("record", fields=fields, nullable=frozenset(nullable))
    return None


def _unwrap(schema: Mapping[str, Any], root: Mapping[str, Any],
            depth: int) -> tuple[Mapping[str, Any], bool]:
    """``schema`` with local ``$ref``s followed and a nullable union reduced to its one
    other type; and whether it was nullable. Anything else is returned as it is."""
    nullable = False
    for _ in range(16 - min(depth, 16)):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = _local_ref(ref, root)
            if target is None:
                return {}, nullable
            schema = target
            continue
        kind = schema.get("type")
        if isinstance(kind, list):
            others = [k for k in kind if k != "null"]
            if len(others) != 1:
                return {}, nullable
            schema, nullable = {**schema, "type": others[0]}, nullable or len(kind) > 1
            continue
        union = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(union, list):
            branches = [b for b in union if isinstance(b, Mapping)]
            others = [b for b in branches if b.get("type") != "null"]
            if len(branches) != len(union) or len(others) != 1:
                return {}, nullable
            schema, nullable = others[0], nullable or len(branches) > 1
            continue
        return schema, nullable
    return {}, nullable


def _local_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema ``#/$defs/Name`` (or ``#/definitions/Name``) points to in ``root``."""
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            defs = root.get(prefix[2:-1])
            target = defs.get(ref[len(prefix):]) if isinstance(defs, Mapping) else None
            return target if isinstance(target, Mapping) else None
    return None
