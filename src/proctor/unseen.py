"""Which characters of outside text a terminal or a Markdown reader would not show as
themselves: one predicate for every place that escapes text for display.

Text an agent or an upstream chose (a tool's name, an event's target, an argument) is
printed to an operator's terminal (:mod:`proctor.cli.output`) and written into reports
(:mod:`proctor.oversight.compliance.render`). A character it holds is *unseen* if it
is a control character (Cc: an escape sequence the terminal obeys), a format character
(Cf: bidirectional overrides that reorder what is shown, zero-width spaces and joiners,
tag characters U+E0001 and U+E0020-E007F, the interlinear annotation marks
U+FFF9-FFFB), a line or paragraph separator (Zl, Zp), a surrogate (Cs) or a private use
character (Co: drawn by whatever the font puts there), or one of the other default
ignorable code points that render as nothing (Unicode's DerivedCoreProperties): the
combining grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0,
the Khmer inherent vowels U+17B4-17B5, the Mongolian free variation selectors
U+180B-180F, the variation selectors U+FE00-FE0F and U+E0100-E01EF, U+FFF0-FFF8,
U+1BCA0-1BCA3, U+1D173-1D17A and the rest of U+E0000-E0FFF. Both places escape exactly
these (as ``\\uXXXX``); one list kept in each used to miss some.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["is_unseen", "unseen_replaced"]

_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
_IGNORABLE = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
# what may be unseen: everything but printable ASCII (most text is, and skips the rest)
_MAYBE = re.compile(r"[^\x20-\x7e]")


def is_unseen(char: str) -> bool:
    """Whether ``char`` (one character) is not shown as itself (see the module)."""
    if unicodedata.category(char) in _UNSEEN_CATEGORIES:
        return True
    point = ord(char)
    return any(low <= point <= high for low, high in _IGNORABLE)


def unseen_replaced(text: str, escape: Callable[[str], str], *, keep: str = "") -> str:
    """``text`` with each unseen character but those in ``keep`` replaced by
    ``escape(char)``."""
    def replaced(match: re.Match[str]) -> str:
        char = match.group()
        return escape(char) if char not in keep and is_unseen(char) else char

    return _MAYBE.sub(replaced, text)
