from __future__ import annotations

import pytest

from proctor.errors import RequestError
from proctor.policy.arguments import shape_from_json_schema


def test_json_schema_maps_to_cedar_types_leaving_out_what_cedar_cannot_hold() -> None:
    shape = shape_from_json_schema({
        "type": "object",
        "properties": {
            "path": {"type": "string", "enum": ["a", "b"]},
            "count": {"type": "integer"},
            "force": {"type": "boolean"},
            "files": {"type": "array", "items": {"type": "string"}},
            "opts": {"type": "object", "properties": {"depth": {"type": "integer"}},
                     "required": ["depth"]},
            "ratio": {"type": "number"},
            "free": {"type": "object"},
            "anything": {},
        },
        "required": ["path"],
    })
    assert shape.to_cedar() == (
        '{"count"?: Long, "files"?: Set<String>, "force"?: Bool, '
        '"opts"?: {"depth": Long}, "path": String}'
    )


def test_a_tool_without_input_schema_has_empty_args() -> None:
    assert shape_from_json_schema(None).to_cedar() == "{}"
    assert shape_from_json_schema({"type": "string"}).to_cedar() == "{}"


def test_an_optional_parameter_as_pydantic_writes_it_is_typed_and_its_null_is_absent() -> None:
    # what pydantic (and so FastMCP) writes for `cc: list[str] | None = None` and an enum
    shape = shape_from_json_schema({
        "type": "object",
        "$defs": {"Permission": {"enum": ["r", "rw"], "type": "string"}},
        "properties": {
            "to": {"type": "array", "items": {"type": "string"}},
            "cc": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                   "default": None},
            "note": {"type": ["string", "null"]},
            "end": {"oneOf": [{"type": "null"}, {"type": "string"}]},
            "permission": {"$ref": "#/$defs/Permission"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "elsewhere": {"$ref": "https://example.com/schema.json"},
        },
        "required": ["to", "end", "permission"],
    })
    assert shape.to_cedar() == (
        '{"cc"?: Set<String>, "end"?: String, "note"?: String, "permission": String, '
        '"to": Set<String>}'
    )
    assert shape.project({"to": ["a"], "cc": None, "end": None, "permission": "r",
                          "either": 1}) == {"to": ["a"], "permission": "r"}
    assert shape.project({"to": ["a"], "cc": ["b"], "end": "x", "permission": "rw"}) == {
        "to": ["a"], "cc": ["b"], "end": "x", "permission": "rw"}


def test_a_null_is_still_refused_where_the_schema_does_not_allow_it() -> None:
    shape = shape_from_json_schema({"type": "object", "properties": {
        "to": {"type": "string"}}, "required": ["to"]})
    with pytest.raises(RequestError, match=r"`args\.to` must be of type String"):
        shape.project({"to": None})


def test_a_reference_cycle_does_not_recurse_forever() -> None:
    shape = shape_from_json_schema({"type": "object", "$defs": {
        "A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
        "properties": {"loop": {"$ref": "#/$defs/A"}, "ok": {"type": "integer"}}})
    assert shape.to_cedar() == '{"ok"?: Long}'
