"""One list of what a terminal or a report reader would not see as itself, used by the
command line's output and the compliance report alike: tag characters, variation
selectors, fillers and annotation marks included (each place kept a list of its own,
and both missed these)."""

from __future__ import annotations

import io
import json

import pytest

from proctor.cli.output import _TextConsole, json_escaped
from proctor.oversight.compliance.render import render_html, render_markdown, shown
from proctor.unseen import is_unseen

# each kind the lists missed, and a few they had
MISSED = ["\U000e0041", "\U000e007f", "\U000e0001", "\ufe0f", "\ufe00", "\U000e0100",
          "\U000e01ef", "\u034f", "\u115f", "\u1160", "\u3164", "\uffa0", "\u17b4", "\u17b5",
          "\ufff9", "\ufffa", "\ufffb", "\ue000"]
HAD = ["\x1b", "\x9b", "\u202e", "\u200b", "\u2028", "\u00ad", "\ufeff", "\u061c"]
SEEN = ["a", "é", "\u4e2d", "\U0001f600", " ", "-", "\u0301"]


@pytest.mark.parametrize("char", MISSED + HAD)
def test_every_unseen_character_is_escaped_on_the_terminal_in_json_and_in_reports(
        char: str) -> None:
    assert is_unseen(char)
    value = f"tool{char}name"
    out = io.StringIO()
    _TextConsole(file=out, highlight=False, width=200).print(value)
    assert char not in out.getvalue()
    assert "toolname" not in out.getvalue()  # escaped, not dropped
    document = json_escaped(json.dumps({"v": value}, ensure_ascii=False))
    assert char not in document and json.loads(document) == {"v": value}
    assert char not in shown(value)
    assert char not in render_markdown(_with(value))
    assert char not in render_html(_with(value))


@pytest.mark.parametrize("char", SEEN)
def test_what_shows_as_itself_is_left(char: str) -> None:
    assert not is_unseen(char)
    assert shown(f"a{char}b") == f"a{char}b"


@pytest.mark.parametrize("value", ["www.evil.example", "WWW.evil.example",
                                   "mail me at ops@evil.example", "https://evil.example"])
def test_no_value_opens_an_extended_autolink_in_markdown(value: str) -> None:
    text = render_markdown(_with(value))
    assert "@" not in text.replace("\\@", "")
    assert "www." not in text.lower()
    assert "://" not in text.replace("\\://", "")


def _with(value: str) -> dict[str, object]:
    return {
        "window": {"since": "s", "until": "u"}, "generated_at": "g",
        "summary": {"evidenced": 0, "entries": 0, "gaps": 1, "cited_events": 0},
        "checkpoint": None, "frameworks": {},
        "entries": [], "gaps": [{"kind": "tool_without_policy", "subject": value,
                                 "detail": value}],
    }
