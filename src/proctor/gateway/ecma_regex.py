"""An ECMA-262 pattern (what JSON Schema's ``pattern`` and ``patternProperties`` mean)
written as the RE2 pattern that matches the same strings, or refused.

RE2 reads much of ECMA-262's syntax with other meanings: its ``\\s`` is ``[\\t\\n\\f\\r ]``,
its ``.`` leaves out ``\\n`` only, ``[]a]`` is a class holding ``]`` and ``a``, and
``(?s:.)``, ``\\A``, ``\\z``, ``\\pL``, ``[[:alpha:]]`` are its own syntax. A pattern read
by RE2 as it stands let an argument through that the policy's author had excluded: a
``\\r`` past ``^.*$`` (a header injected), a U+00A0 or ``\\v`` past ``^\\S+$`` (an argument
split in two). So the pattern is read here by ECMA-262's grammar (§22.2.1, with Annex B's
literal ``]``, ``}`` and ``{``), and written back with nothing of RE2's syntax but groups,
alternatives, quantifiers, ``^``, ``$`` and ``\\b``: every character and every set
is spelled out in code points. As ECMA-262 has them (§22.2.2, the CharSet of a
CharacterClassEscape; §12.2 White Space; §12.3 Line Terminators):

- ``\\s`` is WhiteSpace and LineTerminator: U+0009, U+000B, U+000C, U+0020, U+00A0,
  U+FEFF, the Zs category (U+1680, U+2000 to U+200A, U+202F, U+205F, U+3000), U+000A,
  U+000D, U+2028, U+2029; ``\\S`` is every other code point;
- ``.`` is every code point but the four line terminators; ``[^]`` is every code point,
  ``[]`` none;
- ``\\d`` is ``[0-9]``, ``\\w`` ``[A-Za-z0-9_]``, and ``\\b`` weighs ``\\w`` (RE2's ``\\b``
  is ASCII too); ``^`` and ``$`` hold at the very start and the very end only.

A character is a code point, as with ECMA-262's ``u`` flag and as JSON Schema counts
``maxLength``: ``^.{0,2}$`` takes two emoji (without the flag, four UTF-16 code units,
refused), and ``\\uD83D\\uDE00`` is one character, U+1F600. A lone surrogate in the text
is one character too (:func:`proctor.gateway.schemas._search`), as ECMA-262 has it.

Refused (:class:`PatternRefusedError`; the gateway then hides the tool): what has no
linear-time match (a backreference, ``\\k<…>``, a lookaround) and what ECMA-262 does not
read as one thing or at all: ``\\B`` (RE2 holds it between two bytes of one character),
inline flags and flag groups (``(?i)``, ``(?s:…)``), other
``(?…`` groups (``(?P<…>``, ``(?#…)``), ``\\p{…}`` (``p{…}`` without the ``u`` flag, and
RE2's Unicode tables are not the engine's), ``\\u{…}``, a lone surrogate, escapes of
letters and digits ECMA-262 does not define (``\\A``, ``\\z``, ``\\Q``, ``\\C``, ``\\a``,
``\\8``), legacy octal, a range with a class escape at an end (``[\\d-z]``), and whatever
ECMA-262 calls a syntax error.
"""

from __future__ import annotations

import re
import string

__all__ = ["PatternRefusedError", "translate_pattern"]

_MAX = 0x10FFFF
Ranges = tuple[tuple[int, int], ...]


class PatternRefusedError(Exception):
    """A pattern not translated; ``reason`` completes "pattern `…` …" (lowercase)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _normal(ranges: list[tuple[int, int]] | Ranges) -> Ranges:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return tuple(merged)


def _complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for low, high in _normal(ranges):
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= _MAX:
        out.append((start, _MAX))
    return tuple(out)


_LINE_TERMINATORS: Ranges = ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
_WHITE_SPACE: Ranges = ((0x09, 0x09), (0x0B, 0x0C), (0x20, 0x20), (0xA0, 0xA0),
                        (0x1680, 0x1680), (0x2000, 0x200A), (0x202F, 0x202F),
                        (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF))
_SPACE = _normal(_WHITE_SPACE + _LINE_TERMINATORS)
_DIGIT: Ranges = ((0x30, 0x39),)
_WORD: Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_CLASS_ESCAPES: dict[str, Ranges] = {
    "d": _DIGIT, "D": _complement(_DIGIT), "s": _SPACE, "S": _complement(_SPACE),
    "w": _WORD, "W": _complement(_WORD)}
_DOT = _complement(_LINE_TERMINATORS)
_CONTROL = {"f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
# `\` before an ASCII sign is the sign itself, in every ECMA-262 reading that accepts it
_IDENTITY = frozenset(string.punctuation)
_HEX = frozenset(string.hexdigits)
_BRACED = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")
_GROUP_NAME = re.compile(r"<([^>]*)>")
_LEAD, _TRAIL = range(0xD800, 0xDC00), range(0xDC00, 0xE000)


def translate_pattern(pattern: str) -> str:
    """The RE2 pattern matching what ``pattern`` (ECMA-262) matches, or
    :class:`PatternRefusedError`.

    >>> print(translate_pattern("^.$"))
    ^[\\x{0}-\\x{9}\\x{B}-\\x{C}\\x{E}-\\x{2027}\\x{202A}-\\x{10FFFF}]$
    """
    return _Reader(pattern).read()


class _Reader:
    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.at = 0
        self.names: set[str] = set()

    def read(self) -> str:
        out: list[str] = []
        depth = 0
        quantifiable = False  # whether what was written last takes a quantifier
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            piece: str | None = None
            if char == "\\":
                piece, quantifiable = self._escape()
            elif char == "[":
                piece, quantifiable = _set(self._class()), True
            elif char == "(":
                piece, quantifiable = self._group(), False
                depth += 1
            elif char == ")":
                if depth == 0:
                    raise PatternRefusedError("has a `)` that closes no group")
                depth -= 1
                piece, quantifiable = ")", True
                self.at += 1
            elif char in "*+?" or (char == "{" and _BRACED.match(text, self.at)):
                if not quantifiable:
                    raise PatternRefusedError(f"has nothing to repeat before `{char}`")
                piece, quantifiable = self._quantifier(), False
            elif char in "|^$":
                piece, quantifiable = char, False
                self.at += 1
            elif char == ".":
                piece, quantifiable = _set(_DOT), True
                self.at += 1
            else:
                piece, quantifiable = _char(self._literal(char)), True
                self.at += 1
            out.append(piece)
        if depth:
            raise PatternRefusedError("has a group that is not closed")
        return "".join(out)

    def _quantifier(self) -> str:
        text = self.text
        braced = _BRACED.match(text, self.at)
        if braced is None:
            piece = text[self.at]
            self.at += 1
        else:
            low, comma, high = braced.group(1), braced.group(2), braced.group(3)
            # over 1000, RE2 refuses it; int() of 5,000 digits raises
            if max(len(low.lstrip("0")), len((high or "").lstrip("0"))) > 4:
                raise PatternRefusedError("has no linear-time match (a repetition over 1000)")
            if high and int(high) < int(low):
                raise PatternRefusedError(f"has a repetition out of order (`{braced.group()}`)")
            piece = "{" + str(int(low)) + ("," if comma else "") + (
                str(int(high)) if high else "") + "}"
            self.at = braced.end()
        if text.startswith("?", self.at):
            piece += "?"
            self.at += 1
        return piece

    def _group(self) -> str:
        text, at = self.text, self.at
        if not text.startswith("(?", at):
            self.at += 1
            return "(?:"  # nothing is captured, and nothing refers back
        if text.startswith(":", at + 2):
            self.at += 3
            return "(?:"
        if text.startswith(("(?=", "(?!", "(?<=", "(?<!"), at):
            raise PatternRefusedError("has no linear-time match (a lookaround)")
        named = _GROUP_NAME.match(text, at + 2)
        if named is None:
            raise PatternRefusedError(
                f"has `{text[at:at + 4]}`: an inline flag or a group ECMA-262 does not "
                "have (only `(…)`, `(?:…)` and `(?<name>…)` are read)")
        name = named.group(1)
        if not name.replace("$", "_").isidentifier() or name in self.names:
            raise PatternRefusedError(f"has a group name ECMA-262 refuses (`{name[:50]}`)")
        self.names.add(name)
        self.at = named.end()
        return "(?:"

    def _escape(self) -> tuple[str, bool]:
        """The escape at ``self.at`` outside a class, and whether it takes a quantifier."""
        char = self.text[self.at + 1:self.at + 2]
        if char == "b":
            self.at += 2
            return "\\b", False
        if char == "B":
            # RE2 weighs its assertions at byte offsets, and an unanchored search starts
            # at any byte: between two bytes of one UTF-8 character (neither a word
            # character) `\B` holds, so `x|\B` took text ECMA-262 refuses (`\b` needs
            # an ASCII word byte on one side, and holds nowhere inside a character)
            raise PatternRefusedError(
                "has `\\B`: RE2 weighs it inside a character's bytes, ECMA-262 does not")
        if char in _CLASS_ESCAPES:
            self.at += 2
            return _set(_CLASS_ESCAPES[char]), True
        return _char(self._character_escape()), True

    def _character_escape(self) -> int:
        """The code point the escape at ``self.at`` stands for (not a class escape)."""
        text, at = self.text, self.at
        char = text[at + 1:at + 2]
        self.at += 2
        if char in _CONTROL:
            return _CONTROL[char]
        if char == "c" and text[at + 2:at + 3].isascii() and text[at + 2:at + 3].isalpha():
            self.at += 1
            return ord(text[at + 2]) % 32
        if char == "0" and not text[at + 2:at + 3].isdigit():
            return 0
        if char == "x" and _hex(text[at + 2:at + 4], 2):
            self.at += 2
            return int(text[at + 2:at + 4], 16)
        if char == "u" and _hex(text[at + 2:at + 6], 4):
            self.at += 4
            code = int(text[at + 2:at + 6], 16)
            trail = text[at + 8:at + 12]
            if (code in _LEAD and text.startswith("\\u", at + 6) and _hex(trail, 4)
                    and int(trail, 16) in _TRAIL):
                self.at += 6
                return 0x10000 + ((code - 0xD800) << 10) + (int(trail, 16) - 0xDC00)
            if code in _LEAD or code in _TRAIL:
                raise PatternRefusedError(f"has a lone surrogate (`\\u{text[at + 2:at + 6]}`): "
                                          "a code unit without the `u` flag, a code point "
                                          "with it")
            return code
        if char in _IDENTITY:
            return ord(char)
        if char == "":
            raise PatternRefusedError("ends with `\\`")
        if char in "123456789k":
            raise PatternRefusedError("has no linear-time match (a backreference)")
        raise PatternRefusedError(
            f"has `\\{char}`, not read here: no escape of ECMA-262's, or one that means a "
            "thing with the `u` flag and another without (`\\p{…}`, `\\u{…}`, legacy "
            "octal), or one RE2 would read as its own (`\\A`, `\\z`, `\\Q`)")

    def _literal(self, char: str) -> int:
        if ord(char) in _LEAD or ord(char) in _TRAIL:
            raise PatternRefusedError("has a lone surrogate: a code unit without the `u` "
                                      "flag, a code point with it")
        return ord(char)

    def _class(self) -> Ranges:
        """The code points of the class at ``self.at``, its ``^`` applied."""
        text = self.text
        self.at += 1
        negated = text.startswith("^", self.at)
        self.at += negated
        ranges: list[tuple[int, int]] = []
        while True:
            if self.at >= len(text):
                raise PatternRefusedError("has a class `[` that is not closed")
            if text[self.at] == "]":
                self.at += 1
                break
            low = self._class_atom()
            if text.startswith("-", self.at) and text[self.at + 1:self.at + 2] not in ("", "]"):
                self.at += 1
                high = self._class_atom()
                if isinstance(low, tuple) or isinstance(high, tuple):
                    raise PatternRefusedError("has a range with a class escape at an end")
                if high < low:
                    raise PatternRefusedError("has a range out of order in a class")
                ranges.append((low, high))
            elif isinstance(low, tuple):
                ranges.extend(low)
            else:
                ranges.append((low, low))
        found = _normal(ranges)
        return _complement(found) if negated else found

    def _class_atom(self) -> int | Ranges:
        text, at = self.text, self.at
        if text[at] != "\\":
            self.at += 1
            return self._literal(text[at])
        char = text[at + 1:at + 2]
        if char in _CLASS_ESCAPES:
            self.at += 2
            return _CLASS_ESCAPES[char]
        if char in ("b", "-"):
            self.at += 2
            return 0x08 if char == "b" else 0x2D
        return self._character_escape()


def _hex(digits: str, count: int) -> bool:
    return len(digits) == count and set(digits) <= _HEX


def _char(code: int) -> str:
    char = chr(code)
    return char if char.isascii() and char.isalnum() else f"\\x{{{code:X}}}"


def _set(ranges: Ranges) -> str:
    """A class of exactly ``ranges`` (normalised), in RE2's syntax; none: never matches."""
    if not ranges:
        return f"[^\\x{{0}}-\\x{{{_MAX:X}}}]"
    return "[" + "".join(f"\\x{{{low:X}}}" if low == high else f"\\x{{{low:X}}}-\\x{{{high:X}}}"
                         for low, high in ranges) + "]"
