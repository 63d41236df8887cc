"""Typing a tool's arguments for Cedar, from the tool's JSON Schema ``inputSchema``.

Policies constrain ``context.args``; the validator needs its type, and every
request's arguments must be checked against that type before Cedar sees them.

Mapping: ``string`` → ``String`` (enums too), ``integer`` → ``Long``,
``boolean`` → ``Bool``, ``array`` of a mappable item → ``Set``, ``object`` with
``properties`` → a record. Anything else (``number``, ``null``, unions, free-form
objects) has no faithful Cedar type: such an argument is left out of
``context.args``, so a policy cannot name it, and the validator says so.
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
    shape = _shape(schema, depth=0)
    return shape if shape is not None and shape.kind == "record" else EMPTY_RECORD


def _shape(schema: Mapping[str, Any], depth: int) -> ArgShape | None:
    if depth > 16:
        return None
    kind = schema.get("type")
    if kind == "string":
        return ArgShape("string")
    if kind == "integer":
        return ArgShape("long")
    if kind == "boolean":
        return ArgShape("bool")
    if kind == "array":
        items = schema.get("items")
        item = _shape(items, depth + 1) if isinstance(items, Mapping) else None
        return ArgShape("set", item=item) if item is not None else None
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return ArgShape("record") if depth == 0 else None
        required = set(schema.get("required") or ())
        fields: dict[str, tuple[ArgShape, bool]] = {}
        for name, sub in props.items():
            sub_shape = _shape(sub, depth + 1) if isinstance(sub, Mapping) else None
            if sub_shape is not None:
                fields[str(name)] = (sub_shape, name in required)
        return ArgShape("record", fields=fields)
    return None
