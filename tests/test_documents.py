"""Documents from outside are read with a size cap and a depth cap: deeply nested JSON,
YAML and TOML, and YAML alias bombs, are one specific error, never a RecursionError."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from proctor.documents import MAX_DEPTH, parse_json, parse_toml, parse_yaml
from proctor.errors import DocumentError

DEEP_JSON = "[" * 6000 + "]" * 6000  # a 12 KB line: far past the decoder's recursion
DEEP_YAML = "a: " + "[" * 6000 + "]" * 6000
DEEP_BLOCK_YAML = "".join(f"{'  ' * i}k:\n" for i in range(400)) + "  " * 400 + "k: 1\n"
DEEP_TOML = "a = " + "[" * 3000 + "]" * 3000
# Ten aliases of ten aliases of ...: a few hundred bytes that stand for 10^9 strings.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
    for i in range(8))


@pytest.mark.parametrize(("parse", "text"), [
    (parse_json, DEEP_JSON), (parse_yaml, DEEP_YAML), (parse_yaml, DEEP_BLOCK_YAML),
    (parse_toml, DEEP_TOML)], ids=["json", "yaml-flow", "yaml-block", "toml"])
def test_a_deeply_nested_document_is_too_deep_not_a_recursion_error(
        parse: Callable[..., Any], text: str) -> None:
    with pytest.raises(DocumentError) as refused:
        parse(text, what="the document")
    assert refused.value.code == "document_too_deep"
    assert refused.value.message == f"the document nests deeper than {MAX_DEPTH} levels"


def test_nesting_up_to_the_cap_is_read_and_brackets_inside_strings_do_not_count() -> None:
    at_cap = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(at_cap, what="x") == json.loads(at_cap)
    assert parse_yaml(at_cap, what="x") == json.loads(at_cap)
    with pytest.raises(DocumentError):
        parse_json("[" + at_cap + "]", what="x")
    quoted = json.dumps({"text": "[{" * 5000, "escaped": '\\"[[[' * 100})
    assert parse_json(quoted.encode(), what="x")["text"] == "[{" * 5000


def test_a_yaml_alias_is_refused_so_a_small_file_cannot_stand_for_a_huge_one() -> None:
    assert len(ALIAS_BOMB) < 500
    with pytest.raises(DocumentError) as refused:
        parse_yaml(ALIAS_BOMB, what="the bundle")
    assert refused.value.code == "document_alias_refused"
    assert refused.value.message == ("the bundle uses a YAML alias (line 2); aliases are not "
                                     "allowed")


def test_a_document_over_its_size_cap_is_refused_before_it_is_parsed() -> None:
    for parse in (parse_json, parse_yaml, parse_toml):
        with pytest.raises(DocumentError) as refused:
            parse(b"a = 1" + b" " * 100, what="the file", max_bytes=100)
        assert (refused.value.code, refused.value.message) == (
            "document_too_large", "the file is larger than 100 bytes")


@pytest.mark.parametrize(("parse", "text", "says"), [
    (parse_json, b'{"a": 1', "the file is not valid JSON: Expecting ',' delimiter"),
    (parse_json, '[1]'.encode("utf-16"), "the file is not UTF-8"),
    (parse_json, b"9" * 5000, "the file is not valid JSON: Exceeds the limit"),
    (parse_yaml, b"a: [1\nb: {", "the file is not valid YAML: "),
    (parse_yaml, b"a: !!python/object:os.system x", "could not determine a constructor"),
    (parse_yaml, b"\xff", "the file is not UTF-8"),
    (parse_toml, b"= broken", "the file is not valid TOML: Invalid statement")])
def test_a_malformed_document_is_one_line_naming_what_is_wrong(
        parse: Callable[..., Any], text: bytes, says: str) -> None:
    with pytest.raises(DocumentError) as refused:
        parse(text, what="the file")
    assert refused.value.code == "document_malformed"
    assert says in refused.value.message
    assert "\n" not in refused.value.message
