"""Finding random-looking strings (likely credentials) in text, without flagging code.

A candidate is a run of 20 to 512 characters of ``A-Z a-z 0-9 + / _ -``. It is
flagged when it looks random on four counts:

- it mixes upper case, lower case and digits (hex digests, UUIDs and plain
  words do not);
- its Shannon entropy is at most 0.8 bit/char below ``log2(length)`` — the
  most a string of that length can have — and at least 4.6 past that;
- the character class (upper, lower, digit, other) changes at 40 % or more of
  its positions (``PytestRemovedIn10Warning`` changes at 35 %);
- less than 45 % of it is pronounceable words (``pbeWithSHA1AndDES_CBC``).

Measured on random base62 strings this flags about 87 % of those 20 long, 92 % at
24 and 95 % at 32 and more; on 55 MB of Python sources (the dependencies'
site-packages) it flagged 64 identifiers. Runs over 512 characters are taken to
be data (images, archives), not credentials, and are left alone.

>>> is_random_looking("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
True
>>> is_random_looking("PytestRemovedIn10Warning"), is_random_looking("a" * 30)
(False, False)
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterator

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "find_random_looking", "is_random_looking",
           "shannon_entropy"]

MIN_LENGTH = 20
MAX_LENGTH = 512
_ENTROPY_MARGIN = 0.8
_ENTROPY_ENOUGH = 4.6
_MIN_SWITCH_RATIO = 0.4
_MAX_WORDY = 0.45

_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{20,}+")  # MIN_LENGTH
_HEXISH = re.compile(r"[0-9a-fA-F_-]+")
_WORD = re.compile(r"[A-Z]?[a-z]{2,}+")
_VOWEL = re.compile(r"[aeiouy]")
_CLASS = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-",
    "U" * 26 + "l" * 26 + "d" * 10 + "....")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character frequencies."""
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in Counter(text).values()) if size else 0.0


def is_random_looking(run: str) -> bool:
    """Whether ``run`` (characters of ``A-Z a-z 0-9 + / _ -`` only) looks random."""
    size = len(run)
    if size < MIN_LENGTH or size > MAX_LENGTH or _HEXISH.fullmatch(run):
        return False
    classes = run.translate(_CLASS)
    if "U" not in classes or "l" not in classes or "d" not in classes:
        return False
    if shannon_entropy(run) < min(math.log2(size) - _ENTROPY_MARGIN, _ENTROPY_ENOUGH):
        return False
    switches = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    if switches < _MIN_SWITCH_RATIO * (size - 1):
        return False
    wordy = sum(len(w) for w in _WORD.findall(run) if _VOWEL.search(w))
    return wordy < _MAX_WORDY * size


def find_random_looking(text: str) -> Iterator[tuple[int, int]]:
    """The spans of the random-looking runs in ``text``, left to right."""
    for match in _RUN.finditer(text):
        if is_random_looking(match.group()):
            yield match.span()
