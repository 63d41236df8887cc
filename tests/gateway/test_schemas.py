"""The validators the gateway makes of an upstream's schemas (proctor.gateway.schemas):
references within the schema only, patterns read as ECMA-262 and matched by RE2, in every
draft; through the gateway: tests/gateway/test_schema_safety.py."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.gateway.schemas import SchemaRefusedError, safe_validator

DRAFT4 = "http://json-schema.org/draft-04/schema#"
DRAFT7 = "http://json-schema.org/draft-07/schema#"


@pytest.mark.parametrize("schema", [
    {"$ref": "https://schemas.acme.example/tool.json"},
    {"properties": {"q": {"$dynamicRef": "file:///srv/schema.json"}}},
    {"properties": {"default": {"$ref": "http://169.254.169.254/"}}},  # a property's name
    {"$defs": {"a": {"$ref": "other.json#/a"}}},  # relative: against a base outside
    {"properties": {"q": {"pattern": "^(a+)\\1$"}}},
    {"properties": {"q": {"pattern": "(?<=x)y"}}},
    {"propertyNames": {"pattern": "a{1001}"}},
    {"patternProperties": {"(?!x)": {}}},
    {"patternProperties": {"^x": {}}, "unevaluatedProperties": False},
    {"$schema": DRAFT4, "patternProperties": {"(a)\\1": {}}},
], ids=["ref", "dynamic-ref", "ref-under-property-named-default", "relative-ref",
        "backreference", "lookbehind", "repetition", "lookahead-key", "unevaluated",
        "draft4"])
def test_a_schema_that_refers_outside_or_has_no_linear_match_is_refused(
        schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaRefusedError):
        safe_validator({"type": "object", **schema})


@pytest.mark.parametrize("draft", [DRAFT4, DRAFT7, None])
def test_patterns_are_read_as_ecma_262_in_every_draft(draft: str | None) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"ascii": {"type": "string", "pattern": "^[\\u0000-\\u007F]*$"},
                       "word": {"type": "string", "pattern": "^[a-z]+$"},
                       "digits": {"type": "string", "pattern": "^\\d+$"}},
        "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
        "additionalProperties": False}
    if draft is not None:
        schema["$schema"] = draft
    validator = safe_validator(schema)
    assert validator.is_valid({"ascii": "abc", "word": "abc", "digits": "42", "x-one": "v"})
    for bad in ({"ascii": "é"}, {"word": "abc\n"}, {"digits": "٤٢"}, {"x-one": 1},
                {"y": "v"}):
        assert not validator.is_valid(bad), bad


def test_a_reference_within_the_schema_is_followed() -> None:
    validator = safe_validator({"type": "object", "properties": {"q": {"$ref": "#/$defs/K"}},
                                "$defs": {"K": {"enum": ["bug", "feature"]}}})
    assert validator.is_valid({"q": "bug"}) and not validator.is_valid({"q": "other"})


def test_unique_items_are_equal_as_json_schema_has_it() -> None:
    validator = safe_validator({"type": "array", "uniqueItems": True})
    assert validator.is_valid([1, True, "1", [1], [True], {"a": 1}, {"a": True}, None, 0,
                               False])
    for same in ([1, 1.0], [None, None], [{"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]}],
                 [[1, "x"], [1, "x"]]):
        assert not validator.is_valid(same), same


def test_the_re2_calls_the_search_makes_answer_as_it_reads_them() -> None:
    # proctor.gateway.schemas._search asks google-re2's compiled object directly
    import re2

    from proctor.gateway.schemas import _compiled, _search

    regexp = _compiled("^[a-z]+$")._regexp
    assert regexp.Match(re2._Anchor.UNANCHORED, b"abc", 0, 3) == [(0, 3)]
    assert regexp.Match(re2._Anchor.UNANCHORED, b"ab1", 0, 3)[0] == (-1, -1)
    assert _search("b", "abc") and not _search("^b", "abc") and _search("é$", "café")
    assert not _search("^.$", "\U0001F600\U0001F600") and _search("^..$", "\U0001F600!")
