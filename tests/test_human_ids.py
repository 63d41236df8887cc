"""One canonical form for human ids, and the ids no human may have."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from proctor.human_ids import MAX_HUMAN_ID, canonical_human_id, human_id_problem, is_same_human


@pytest.mark.parametrize(("spelling", "canonical"), [
    ("bob@acme.example", "bob@acme.example"),
    ("Bob@ACME.Example", "bob@acme.example"),
    ("  bob@acme.example\t", "bob@acme.example"),
    ("Bob   Smith", "bob smith"),
    ("\uff22\uff4f\uff42@acme.example", "bob@acme.example"),  # full width
    ("\U0001d41b\U0001d428\U0001d41b@acme.example", "bob@acme.example"),  # mathematical bold
    ("\u2168", "ix"),  # roman numeral nine
    ("Stra\u00dfe", "strasse"),  # full case folding: sharp s is ss
    ("\u1e9e", "ss"),  # capital sharp s
    ("\u212bngstr\u00f6m", "\u00e5ngstr\u00f6m"),  # angstrom sign is a-ring
    ("A\u030angstro\u0308m", "\u00e5ngstr\u00f6m"),  # decomposed is composed
    ("\u0399\u03a3\u0391\u0392\u0395\u039b\u039b\u0391", "\u03b9\u03c3\u03b1\u03b2\u03b5\u03bb"
     "\u03bb\u03b1"),
    ("bo\u200db@acme.example", "bob@acme.example"),  # invisible: dropped, never a new human
    ("\u202ebob@acme.example\u202c", "bob@acme.example"),
    ("bob\u00a0smith", "bob smith"),
])
def test_every_spelling_of_one_human_has_one_canonical_form(spelling: str,
                                                            canonical: str) -> None:
    assert canonical_human_id(spelling) == canonical
    assert is_same_human(spelling, canonical)


def test_the_canonical_form_of_a_canonical_form_is_itself_for_every_code_point() -> None:
    changed = []
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        if unicodedata.category(char) in ("Cn", "Co", "Cs"):  # nothing maps these
            continue
        once = canonical_human_id(f"a{char}b")
        if canonical_human_id(once) != once:
            changed.append(f"U+{point:04X}")
    assert changed == []


def test_different_humans_stay_different() -> None:
    assert not is_same_human("bob@acme.example", "rob@acme.example")
    assert not is_same_human("bob@acme.example", "bob@acme.example.org")
    assert not is_same_human("b\u00f6b", "bob")  # a letter with a diaeresis is another letter


@pytest.mark.parametrize("value", [
    "bob@acme.example", "Bob Smith", "local-admin", "system:risk", "\u0438\u0432\u0430\u043d@"
    "acme.example", "\u0438\u0432\u0430\u043d.petrov@acme.example", "\u5c71\u7530", "x" * 256,
])
def test_ordinary_ids_are_accepted(value: str) -> None:
    assert human_id_problem(value) is None


@pytest.mark.parametrize(("value", "problem"), [
    ("", "is not a human id of 1 to 256 characters"),
    ("   ", "is not a human id of 1 to 256 characters"),
    ("x" * (MAX_HUMAN_ID + 1), "is not a human id of 1 to 256 characters"),
    (None, "is not a human id of 1 to 256 characters"),
    ("bob\x00", "contains U+0000"),
    ("bob\t@acme.example", "contains U+0009"),
    ("bob\n", "contains U+000A"),
    ("bo\u00adb", "contains U+00AD"),  # soft hyphen
    ("bo\u200bb", "contains U+200B"),  # zero-width space
    ("bo\u200cb", "contains U+200C"),  # zero-width non-joiner
    ("bo\u200db", "contains U+200D"),  # zero-width joiner
    ("\u200ebob", "contains U+200E"),  # left-to-right mark
    ("\u202ebob", "contains U+202E"),  # right-to-left override
    ("\u2066bob\u2069", "contains U+2066"),  # left-to-right isolate
    ("\u061cbob", "contains U+061C"),  # Arabic letter mark
    ("\ufeffbob", "contains U+FEFF"),  # byte order mark
    ("bob\ufe0f", "contains U+FE0F"),  # variation selector
    ("bob\u3164", "contains U+3164"),  # Hangul filler
    ("bob\U000e0041", "contains U+E0041"),  # tag letter
    ("bob\ue000", "contains U+E000"),  # private use
    ("bob\u0378", "contains U+0378"),  # unassigned
    ("bob\u2028", "contains U+2028"),  # line separator
    ("bob\u00a0smith", "contains U+00A0"),  # no-break space
    ("\u0430lice@acme.example", "mixes Cyrillic and Latin letters in one word"),
    ("b\u03bfb@acme.example", "mixes Latin and Greek letters in one word"),
])
def test_ids_with_invisible_control_or_confusable_characters_are_refused(
        value: object, problem: str) -> None:
    found = human_id_problem(value)
    assert found is not None and found.startswith(problem)
    assert "bob" not in found and "alice" not in found  # the value is never echoed
