"""The one canonical form of a human's id, and what a human id may not contain.

Humans are compared by id wherever a duty is separated (the owner an agent acts
for may not approve its calls), wherever a policy names one (``principal.owner``,
``context.on_behalf_of``) and wherever a credential is tied to one (API tokens,
console sessions). Every such id is stored, and every comparison made, in the
form :func:`canonical_human_id` gives, so ``Bob@Acme.example``, the same in full
width letters, and ``bob@acme.example`` are one human.

The form follows the PRECIS UsernameCaseMapped profile (RFC 8265, 3.3), made
stricter where a looser match is the safe side of separation of duties:

1. Unicode NFKC: compatibility characters (full and half width, mathematical
   letters, ligatures) become their plain letters; RFC 8265 maps only widths
   and refuses the others, proctor maps them all;
2. full Unicode case folding (``str.casefold``, so ``ß`` matches ``ss``), where
   RFC 8265 uses ``toLowerCase``; then NFKC again, which keeps the form stable;
3. invisible characters (format characters such as zero-width joiners and bidi
   controls, and every default-ignorable code point) are dropped, so an id
   stored before they were refused still compares equal to its visible letters;
4. runs of white space become one space; leading and trailing space is removed.

A new id is refused (:func:`human_id_problem`) if it holds a control, format,
invisible, private-use, unassigned or separator character, is longer than 256
characters, or mixes Latin, Greek and Cyrillic letters within one word (``alice``
spelt with a Cyrillic ``a``, U+0430), the confusables a reader cannot tell apart.

>>> canonical_human_id(" Bob@ACME.example ")
'bob@acme.example'
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_HUMAN_ID", "canonical_human_id", "human_id_problem", "is_same_human"]

MAX_HUMAN_ID = 256
_MAX_INPUT = 4 * MAX_HUMAN_ID
# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) that are not format
# characters: fillers and variation selectors that render as nothing.
_IGNORABLE = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")


def _is_invisible(char: str) -> bool:
    point = ord(char)
    return unicodedata.category(char) == "Cf" or any(
        low <= point <= high for low, high in _IGNORABLE)


def canonical_human_id(value: str) -> str:
    """The form every human id is stored and compared in (see the module docstring).

    Total and idempotent: it never raises, and ``canonical_human_id(x)`` is its
    own canonical form. It does not say whether ``value`` is acceptable as a new
    id: :func:`human_id_problem` does.
    """
    if value.isascii():  # the common case: NFKC changes nothing, casefold is lower
        return " ".join(value.lower().split())
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return " ".join("".join(c for c in folded if not _is_invisible(c)).split())


def is_same_human(left: str, right: str) -> bool:
    """Whether two human ids name the same human: their canonical forms are equal."""
    return canonical_human_id(left) == canonical_human_id(right)


def human_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a new human id, or None if it can.

    The answer never repeats ``value``: it may hold characters a terminal or a
    log viewer would act on. It names the offending code point instead.
    """
    if not isinstance(value, str) or len(value) > _MAX_INPUT:
        return f"is not a human id of 1 to {MAX_HUMAN_ID} characters"
    for char in value:
        if char != " " and (char.isspace() or _is_invisible(char)
                            or unicodedata.category(char) in _REFUSED_CATEGORIES):
            return (f"contains U+{ord(char):04X}, an invisible, control or unassigned "
                    "character")
    canonical = canonical_human_id(value)
    if not 0 < len(canonical) <= MAX_HUMAN_ID:
        return f"is not a human id of 1 to {MAX_HUMAN_ID} characters"
    mixed = _mixed_scripts(canonical)
    if mixed is not None:
        return f"mixes {mixed[0].title()} and {mixed[1].title()} letters in one word"
    return None


def _mixed_scripts(value: str) -> tuple[str, str] | None:
    """The first two of Latin, Greek and Cyrillic found within one run of letters."""
    seen: str | None = None
    for char in value:
        if not unicodedata.category(char).startswith(("L", "M")):
            seen = None  # a word ends at anything not a letter or a mark
            continue
        script = unicodedata.name(char, "").split(" ", 1)[0]
        if script not in _CONFUSABLE_SCRIPTS:
            continue
        if seen is not None and script != seen:
            return seen, script
        seen = script
    return None
