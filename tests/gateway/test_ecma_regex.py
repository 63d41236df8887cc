"""ECMA-262 patterns as the gateway's schema checks match them
(:mod:`proctor.gateway.ecma_regex`, through :func:`proctor.gateway.schemas.safe_validator`),
against what ECMA-262 says they match: its ``\\s`` is WhiteSpace and LineTerminator
(§22.2.2, §12.2, §12.3), its ``.`` every character but a line terminator, its ``[]`` an
empty class. Through the gateway: tests/gateway/test_ecma_patterns.py.

The expected answers are ECMA-262's, written down here (none of them is asked of a
JavaScript engine); a character is a code point, as with the ``u`` flag."""

from __future__ import annotations

import logging

import pytest
from jsonschema import SchemaError

from proctor.gateway.ecma_regex import PatternRefusedError, translate_pattern
from proctor.gateway.schemas import SchemaRefusedError, _search, safe_validator
from proctor.gateway.tools import ExposedTool
from proctor.policy import ToolSpec

# ECMA-262 §12.2 WhiteSpace: TAB, VT, FF, ZWNBSP, and the Zs category (SPACE, NBSP,
# U+1680, U+2000 to U+200A, U+202F, U+205F, U+3000); §12.3 LineTerminator: LF, CR, LS, PS
WHITE_SPACE = ["\t", "\v", "\f", "\ufeff", " ", "\u00a0", "\u1680",
               *map(chr, range(0x2000, 0x200B)), "\u202f", "\u205f", "\u3000"]
LINE_TERMINATORS = ["\n", "\r", "\u2028", "\u2029"]
# close to them and in neither: NEL, U+180E (Zs no more since Unicode 6.3), ZWSP, word
# joiner, the information separators (Python's str.isspace() takes U+001C to U+001F and NEL)
NOT_SPACE = ["\x85", "\u180e", "\u200b", "\u2060", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", "a"]


def matches(pattern: str, value: str) -> bool:
    """Whether the gateway takes ``value`` for ``pattern``: as the ``pattern`` keyword
    matches it, and as the validator does when jsonschema's own check of the schema
    (Python's ``re``, for ``format: regex``) lets it be made; when that check refuses the
    pattern (``[^]``, ``\\cJ``, ``(?<name>…)``: ECMA-262 all), the tool is left out."""
    found = _search(pattern, value)
    try:
        validator = safe_validator({"type": "string", "pattern": pattern})
    except SchemaError:
        return found
    assert validator.is_valid(value) is found
    return found


@pytest.mark.parametrize(("pattern", "value", "ecma"), [
    # RE2 read as it stood took each of these
    ("^\\S+$", "rm\u00a0-rf", False),
    ("^\\S+$", "a\u000bb", False),
    ("^\\S+$", "a\u2028b", False),
    ("^\\S+$", "a\ufeffb", False),
    ("^[^\\s;|&]+$", "ls\u3000/etc", False),
    ("^[^\\s;|&]+$", "ls/etc", True),
    ("^.*$", "value\rX-Injected: 1", False),
    ("^.*$", "value\r\nX-Injected: 1", False),
    ("^.{1,64}$", "value\rX-Injected: 1", False),
    ("^.{1,64}$", "abc\u2028def", False),
    ("^.{1,64}$", "abc\u2029def", False),
    ("^.{1,64}$", "abc\ndef", False),
    ("^[]a]*$", "a", False),  # `[]` matches nothing, then `a`, then `]*`
    ("^[]a]*$", "", False),
    ("^a[]]*$", "a]]", False),
    ("[]", "", False),
    ("^[^]$", "\n", True),
    ("^[^]+$", "\r\u2028\u2029x", True),
    # a character is a code point (the `u` flag; JSON Schema's maxLength counts so too)
    ("^.{0,2}$", "\U0001F600\U0001F600", True),
    ("^.$", "\U0001F600", True),
    ("^\\uD83D\\uDE00$", "\U0001F600", True),
    ("^[\\uD83D\\uDE00]$", "\U0001F600", True),
    # already right: `$` at the very end only, `\d` `\w` `\b` ASCII
    ("^[a-z]+$", "abc\n", False),
    ("^\\d+$", "\u0663", False),
    ("^\\D$", "\u0663", True),
    ("^\\w+$", "\u00e9", False),
    ("^\\W$", "\u00e9", True),
    ("\\bfoo\\b", "\u00e9foo", True),
    ("\\bfoo\\b", "_foo", False),
    # escapes as ECMA-262 has them
    ("^\\u00a0$", "\u00a0", True),
    ("^\\x41\\cJ\\0\\v\\t$", "A\n\x00\x0b\t", True),
    ("^[\\b]$", "\x08", True),
    ("^\\/\\-\\.$", "/-.", True),
    ("^\\.$", "a", False),
    # Annex B: `{`, `}` and `]` that are no syntax are themselves
    ("^a{,2}$", "a{,2}", True),
    ("^a{,2}$", "aa", False),
    ("^}]{$", "}]{", True),
    pytest.param("^[[:alpha:]]$", "a", False, marks=pytest.mark.filterwarnings(
        "ignore:Possible nested set:FutureWarning")),  # ECMA: a class of `[:alph`, then `]`
    pytest.param("^[[:alpha:]]$", "a]", True, marks=pytest.mark.filterwarnings(
        "ignore:Possible nested set:FutureWarning")),
    ("^x{2}?$", "xx", True),
    ("^(?:a|b)+$", "abba", True),
    ("^(?<name>a)+$", "aa", True),
], ids=repr)
def test_a_pattern_matches_what_ecma_262_matches(pattern: str, value: str, ecma: bool) -> None:
    assert matches(pattern, value) is ecma


@pytest.mark.parametrize("char", WHITE_SPACE + LINE_TERMINATORS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_space_of_ecma_262_is_a_space(char: str) -> None:
    assert matches("^\\s$", char) and matches("^[\\s]$", char) and matches("^[^\\S]$", char)
    assert not matches("^\\S$", char) and not matches("^[^\\s;]$", char)
    assert not matches("\\S", f"{char}{char}")
    assert safe_validator({"not": {"pattern": "\\s"}}).is_valid(f"a{char}b") is False
    assert matches("^.$", char) is (char not in LINE_TERMINATORS)


@pytest.mark.parametrize("char", NOT_SPACE, ids=lambda c: f"U+{ord(c):04X}")
def test_what_is_no_space_in_ecma_262_is_none(char: str) -> None:
    assert not matches("^\\s$", char) and matches("^\\S$", char) and matches("^[^\\s]$", char)
    assert matches("^.$", char)


@pytest.mark.parametrize("pattern", [
    # no linear-time match
    "(a)\\1", "(?<n>a)\\k<n>", "(?=a)", "(?!a)", "(?<=a)", "(?<!a)",
    # inline flags, flag groups, groups ECMA-262 does not have
    "(?s:.)", "(?i)admin", "(?i:a)", "(?m)^a", "(?P<n>a)", "(?#note)",
    # escapes ECMA-262 does not define, or reads otherwise than RE2, or by flag
    "\\A", "\\z", "\\Z", "\\Q.\\E", "\\C", "\\a", "\\e", "\\pL", "\\p{L}", "\\P{Lu}",
    "\\u{41}", "\\x4", "\\c1", "\\00", "\\1", "\\8", "\\uD800", "\ud800", "\\",
    # RE2 holds `\B` between two bytes of one character: `x|\B` took "9\u017fK"
    "\\Bfoo", "x|\\B",
    # ECMA-262's syntax errors
    "[z-a]", "[\\d-z]", "a{2,1}", "^*", "a**", "(", ")", "[", "(?<1>a)", "(?<n>a)(?<n>b)",
], ids=repr)
def test_a_pattern_the_gateway_cannot_read_as_ecma_262_hides_the_tool(pattern: str) -> None:
    with pytest.raises(PatternRefusedError):
        translate_pattern(pattern)
    # refused; or, before, jsonschema's own check (Python's `re`) finds no regex in it
    with pytest.raises((SchemaRefusedError, SchemaError)):
        safe_validator({"type": "object", "properties": {"q": {"pattern": pattern}}})


def test_a_lone_surrogate_is_one_character_and_no_fault_of_the_tool(
        caplog: pytest.LogCaptureFixture) -> None:
    """``"\\ud800"`` is valid JSON; ECMA-262's strings are UTF-16, where it is a code unit
    (with the ``u`` flag, a code point): ``[a-z]`` does not match it, ``.`` does. Before:
    the match raised UnicodeEncodeError, the call was refused as the tool's fault
    (``tool_schema_refused``) and an error logged, at each call. (The gateway's transports
    refuse such a message before any schema; embedding code calls the check directly.)"""
    assert not matches("^[a-z]+$", "ab\ud800") and matches("^[a-z]+", "ab\ud800")
    assert matches("^.$", "\ud800") and matches("^\\S$", "\udfff") and matches("^[^a]$", "\ud800")
    assert not matches("^.{0,2}$", "\ud800\ud800\ud800") and not matches("^\\s$", "\ud800")
    keyed = safe_validator({"type": "object", "patternProperties": {"^x-.$": {"type": "string"}}})
    assert not keyed.is_valid({"x-\ud800": 1})  # the key matches: its value is checked

    schema = {"type": "object", "properties": {"q": {"type": "string", "pattern": "^[a-z]+$"}}}
    tool = ExposedTool(ToolSpec(server="up", name="t", input_schema=schema), None,
                       safe_validator(schema))
    with caplog.at_level(logging.WARNING):
        problem = tool.argument_errors({"q": "ab\ud800"})
    assert problem is not None and problem.code == "arguments_invalid"
    assert tool.argument_errors({"q": "ab"}) is None
    assert caplog.records == []
