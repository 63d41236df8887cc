"""An upstream's ``pattern`` holds at the gateway as ECMA-262 reads it, RE2 matching it
(:mod:`proctor.gateway.ecma_regex`): told by a real MCP server listing such patterns
(``tests/gateway/pattern_upstream.py``) behind the real gateway (``proctor mcp wrap``, a
process of its own), on both databases.

Before: the pattern went to RE2 as it stood, whose ``\\s`` leaves out U+00A0, ``\\v``,
U+2028, U+3000 and U+FEFF, whose ``.`` takes ``\\r``, U+2028 and U+2029, and whose
``[]a]`` is a class: an agent got a CR past ``^.{1,64}$`` (a header injected) or a
no-break space past ``^\\S+$`` (an argument split in two), and ``(?s:.)`` (a syntax
error in ECMA-262) was read as RE2's flag group. Pattern by pattern:
tests/gateway/test_ecma_regex.py."""

from __future__ import annotations

import json
import sys
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from proctor.audit import EventFilter, iter_events
from proctor.codes import CALL_DENIED, INVALID_PARAMS
from tests.gateway.conftest import Deployment, connected
from tests.gateway.pattern_upstream import REFUSED

pytestmark = pytest.mark.anyio

UPSTREAM = [sys.executable, "-m", "tests.gateway.pattern_upstream"]

# (tool, argument): ECMA-262 rejects each, RE2 as it stood accepted it
SMUGGLED = [
    ("argv", "rm\u00a0-rf"), ("argv", "a\u000bb"), ("argv", "a\u2028b"), ("argv", "a\ufeffb"),
    ("command", "ls\u3000/etc"), ("command", "ls\u000b/etc"),
    ("header", "value\rX-Injected: 1"), ("header", "abc\u2028def"), ("header", "abc\u2029def"),
    ("line", "value\rX-Injected: 1"), ("empty_class", "a"), ("empty_class", ""),
    ("no_space", "rm\u00a0-rf"), ("no_space", "a\u205fb"),
]
# and those it rejected already: `$` at the very end only, `\d` ASCII
REJECTED = [("word", "abc\n"), ("digits", "\u0663"), ("header", "abc\ndef"),
            ("boundary", "foobar")]
ACCEPTED = [("argv", "rm"), ("command", "ls"), ("header", "value"), ("line", "a\tb"),
            ("word", "abc"), ("no_space", "a-b"),
            ("boundary", "\u00e9foo"),  # `\b` weighs ASCII `\w`: é is not a word character
            ("two", "\U0001F600\U0001F600")]  # a character is a code point (the `u` flag)


async def _answer(client: Any, tool: str, arguments: dict[str, Any]) -> Any:
    """The upstream's echo of ``arguments``, or the gateway's refusal: (code, reason,
    message)."""
    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        return exc.error.code, exc.error.data["reason"], exc.error.message
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return json.loads(block.text)


async def test_an_argument_is_matched_as_ecma_262_reads_the_pattern(
        deployment: Deployment) -> None:
    params = deployment.wrap(deployment.grant([{"tool": "test/*"}]), UPSTREAM, server="test")
    async with connected(params) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
        assert listed.isdisjoint(REFUSED)  # hidden
        assert {"argv", "header", "headers", "no_space", "empty_class"} <= listed
        for tool in REFUSED:
            refused = await _answer(client, tool, {"q": "aa"})
            assert refused[:2] == (CALL_DENIED, "tool_schema_refused"), refused
        assert "inline flag" in (await _answer(client, "flag_group", {"q": "a"}))[2]
        assert "linear-time" in (await _answer(client, "lookahead", {"q": "a"}))[2]

        for tool, value in [*SMUGGLED, *REJECTED]:
            refused = await _answer(client, tool, {"q": value})
            assert refused[:2] == (INVALID_PARAMS, "arguments_invalid"), (tool, value, refused)
        for key in ("x-a\u00a0b", "x-a\u2028", "x-\ufeff"):
            refused = await _answer(client, "headers", {key: "v"})
            assert refused[:2] == (INVALID_PARAMS, "arguments_invalid"), key
        for tool, value in ACCEPTED:
            assert await _answer(client, tool, {"q": value}) == {"q": value}
        assert await _answer(client, "headers", {"x-trace": "v"}) == {"x-trace": "v"}
    rejected = [e.event["detail"]["code"] for e in iter_events(
        deployment.runtime.store, EventFilter(action="gateway.reject"))]
    assert rejected.count("arguments_invalid") == len(SMUGGLED) + len(REJECTED) + 3
