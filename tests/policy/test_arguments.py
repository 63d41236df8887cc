from __future__ import annotations

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
