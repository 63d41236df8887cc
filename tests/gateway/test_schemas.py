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
    # proctor.gateway.schemas._search asks google-re2's compiled object directly (its
    # private calls, five times faster); a google-re2 that changes them is searched
    # through its public API, and this test says so
    from proctor.gateway import schemas
    from proctor.gateway.schemas import _search

    assert schemas._DIRECT is not None, "google-re2's private Match changed: _search is slow"
    for direct in (schemas._DIRECT, None):
        schemas._DIRECT = direct
        try:
            assert _search("b", "abc") and not _search("^b", "abc") and _search("é$", "café")
            assert not _search("^.$", "\U0001F600\U0001F600")
            assert _search("^..$", "\U0001F600!")
        finally:
            schemas._DIRECT = schemas._direct_anchor()


def test_an_exponential_schema_is_refused_and_a_recursive_one_checked_in_a_budget() -> None:
    from tests.gateway.schema_upstream import deep, exponential, nested

    with pytest.raises(SchemaRefusedError, match="references written out"):
        safe_validator(exponential(16))
    with pytest.raises(SchemaRefusedError, match="does not resolve"):
        safe_validator({"properties": {"q": {"$ref": "#/$defs/missing"}}})
    chain = {f"d{n}": {"$ref": f"#/$defs/d{n + 1}"} for n in range(150)}
    with pytest.raises(SchemaRefusedError, match="deep"):
        safe_validator({"$ref": "#/$defs/d0", "$defs": {**chain, "d150": {}}})
    validator = safe_validator(exponential(8))  # written out, a few hundred keywords
    assert validator.is_valid({"q": "x"}) and not validator.is_valid({"q": 1})
    recursive = safe_validator(nested())
    assert recursive.is_valid({"q": [[], [[]]]}) and not recursive.is_valid({"q": [1]})
    with pytest.raises(SchemaRefusedError, match="budget"):
        recursive.is_valid({"q": deep(40)})
    with pytest.raises(SchemaRefusedError, match="budget"):
        list(recursive.iter_errors({"q": deep(40)}))
    # a wide instance gets a budget as wide: a recursive tree of thousands of nodes
    tree = safe_validator({"$defs": {"t": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}}}}, "$ref": "#/$defs/t"})
    assert tree.is_valid({"kids": [{"kids": [{} for _ in range(50)]} for _ in range(50)]})


def test_a_keyword_evaluated_outside_a_check_is_refused() -> None:
    # the validator jsonschema builds is only ever run within a budget (fail closed)
    from proctor.gateway.schema_work import OverBudgetError

    validator = safe_validator({"type": "string"})
    with pytest.raises(OverBudgetError):
        validator._validator.is_valid("x")
