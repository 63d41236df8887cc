"""Printing for the CLI: Rich for people, one JSON document with ``--json``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from proctor.unseen import unseen_replaced

if TYPE_CHECKING:
    from proctor.codes import Code

__all__ = ["confirm_review", "console", "err_console", "fail", "json_escaped", "print_json"]

# What is unseen (proctor.unseen) but the newline and the tab: an escape sequence in text
# an agent or an upstream chose (a tool's name or description, an event's target, an
# argument) would be the operator's terminal's to obey (clear the screen, rewrite the
# lines above, set the title or the clipboard); Rich passes ESC through. With them the
# invisible or reordering characters: a bidirectional override showed an agent's
# argument `\u202e1001-c` as `c-1001`, a zero-width space or a tag character hid a
# difference
_KEPT = "\n\t"


def _shown(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class _TextConsole(Console):
    """A Rich console that shows control characters in the text it is given as ``\\xNN``
    (its own styles, from markup, still reach the terminal)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(unseen_replaced(text, _shown, keep=_KEPT), **kwargs)


console: Console = _TextConsole(highlight=False)
err_console: Console = _TextConsole(stderr=True, highlight=False)


# What ``json.dumps(..., ensure_ascii=False)`` leaves raw that a terminal obeys or does not
# show: DEL and the C1 controls (U+009B is CSI, as ESC [ is), and the other unseen
# characters; the C0 ones it escapes itself (the newlines left are the layout's). They
# can only stand inside a JSON string, where ``\u009b`` is the same string.
def _json_shown(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a surrogate pair, as JSON writes a character past the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_escaped(text: str) -> str:
    """JSON text with DEL, the C1 control characters and the other unseen characters
    (:mod:`proctor.unseen`) written as ``\\uXXXX``."""
    return unseen_replaced(text, _json_shown, keep="\n")


def print_json(data: Any) -> None:
    """Write ``data`` as one JSON document on stdout (no control character raw)."""
    sys.stdout.write(json_escaped(json.dumps(data, indent=2, default=str,
                                             ensure_ascii=False)) + "\n")


def fail(message: str, *, code: Code, as_json: bool = False, exit_code: int = 1) -> NoReturn:
    """Report an error in one line (or as JSON) and exit non-zero."""
    if as_json:
        print_json({"error": {"code": code, "message": message}})
    else:
        err_console.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def confirm_review(question: str, *, as_json: bool) -> None:
    """Ask the operator to confirm a review of what the command just showed; refused
    ``review_digest_missing`` (nothing reviewed) with ``--json`` (a script names the
    digest with ``--digest``), on any answer but yes, or with no terminal to answer."""
    from proctor.errors import ReviewUnnamedError

    if as_json:
        raise ReviewUnnamedError("with --json, name the digest of what the review accepts "
                                 "with --digest (show --json gives it)")
    try:
        confirmed = typer.confirm(question, default=False)
    except typer.Abort:
        confirmed = False
    if not confirmed:
        raise ReviewUnnamedError("nothing reviewed: not confirmed (or name the digest with "
                                 "--digest)")
