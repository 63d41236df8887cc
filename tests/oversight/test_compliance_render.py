"""A compliance report shows what came from outside (a tool's name an upstream chose, an
agent's id, a connector's names) as text: nothing of it formats the report, and no
control character of it reaches the terminal the report is printed on."""

from __future__ import annotations

import re
from typing import Any

import pytest

from proctor.oversight.compliance.render import render_html, render_markdown

# what an upstream or an agent may name a tool, a server or a secret
HOSTILE = ("git/x\x1b]0;owned\x07\x1b[2J\x9b2J | injected | cell |\n## Injected heading\n"
           "[click](https://evil.example) ![i](https://evil.example/i.png) "
           "<img src=x onerror=alert(1)> `code` **bold** \u202eevil\u202c")
_RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e]")


def _report(value: str) -> dict[str, Any]:
    return {
        "window": {"since": "2026-12-01T00:00:00+00:00", "until": "2026-12-07T00:00:00+00:00"},
        "generated_at": "2026-12-07T00:00:00+00:00",
        "summary": {"evidenced": 1, "entries": 1, "gaps": 1, "cited_events": 1},
        "checkpoint": {"seq": 5, "kid": value, "signed_at": "2026-12-07T00:00:00+00:00"},
        "frameworks": {"soc2": "SOC 2"},
        "entries": [{"framework": "soc2", "ref": "CC6.1", "title": "Logical access",
                     "control": "c", "feature": "f", "status": "evidenced",
                     "evidence": [{"description": "decisions", "count": 1,
                                   "examples": [{"id": value, "seq": 1}]}]}],
        "gaps": [{"kind": "tool_without_policy", "subject": value,
                  "detail": f"no active policy names `Action::\"{value}\"`"}],
    }


def test_markdown_shows_a_hostile_value_as_text_and_formats_nothing_with_it() -> None:
    text = render_markdown(_report(HOSTILE))
    assert not _RAW.search(text), repr(text)
    assert "\\u001b" in text and "\\u202e" in text
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("#")] == [
        lines[0], "## SOC 2", "## Gaps"]  # no heading of the value's
    [row] = [line for line in lines if line.startswith("| CC6")]
    assert len(re.findall(r"(?<!\\)\|", row)) == 6  # the table's own cells, no more
    for opening in ("[click]", "![i]", "<img", "`code`", "**bold**"):
        assert not re.search(r"(?<!\\)" + re.escape(opening), text), opening
    assert "\\<img src=x onerror=alert\\(1\\)\\>" in text  # shown as it is


@pytest.mark.parametrize("render", [render_markdown, render_html])
def test_no_control_character_of_a_value_reaches_either_format(render: Any) -> None:
    text = render(_report(HOSTILE))
    assert not _RAW.search(text), repr(text)
    assert "owned" in text  # shown, escaped
