"""The encodings a known secret can hide in that plain substring search does not see,
for :class:`proctor.oversight.guard.OutputGuard`.

- **hex** (lower and upper case) is a fixed string per secret: a form like the others
  (:func:`hex_forms`), also searched in decoded media;
- **HTML character references** (``&#x74;``, ``&#116;``, ``&amp;``…), for some
  characters or all: text holding ``&`` is read with its references decoded, and a
  secret found there is redacted over the span of the original text it came from
  (:func:`reference_spans`);
- **split across adjacent text items** (two ``text`` content blocks, two strings of a
  list), as a client would read them joined: each form is looked for across each
  boundary only, in a window as long as the form (:func:`split_spans`);
- **base64 media** that is unpadded or URL-safe: decoded as such and encoded back the
  same way (:func:`decode_media`, :func:`encode_media`).

Each is bounded: a reference pass runs only on text with ``&``, a split pass only on
lists of two or more text items and only near their boundaries.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MediaStyle", "decode_media", "encode_media", "hex_forms", "reference_spans",
           "split_spans"]

# numeric references (with or without the `;` browsers forgive) and XML's named five
_REFERENCE = re.compile(r"&(?:#[xX]([0-9a-fA-F]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));?")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_MEDIA = re.compile(r"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")


def hex_forms(raw: bytes) -> set[str]:
    """``raw`` hex-encoded, in lower and upper case."""
    return {raw.hex(), raw.hex().upper()}


def _unescaped(text: str) -> tuple[str, list[int]]:
    """``text`` with its character references decoded, and where each character of the
    result starts in ``text`` (one more entry: ``len(text)``)."""
    pieces: list[str] = []
    starts: list[int] = []
    done = 0
    for match in _REFERENCE.finditer(text):
        pieces.append(text[done:match.start()])
        starts.extend(range(done, match.start()))
        hexa, decimal, named = match.groups()
        code = int(hexa, 16) if hexa else int(decimal) if decimal else -1
        char = _NAMED[named] if named else chr(code) if 0 < code < 0x110000 else "\ufffd"
        pieces.append(char)
        starts.append(match.start())
        done = match.end()
    pieces.append(text[done:])
    starts.extend(range(done, len(text) + 1))
    return "".join(pieces), starts


def reference_spans(text: str, values: Iterable[str]) -> list[tuple[int, int]]:
    """The spans of ``text`` that, their character references decoded, read as one of
    ``values``; sorted, not overlapping."""
    decoded, starts = _unescaped(text)
    spans: list[tuple[int, int]] = []
    for value in values:
        at = decoded.find(value)
        while at >= 0:
            spans.append((starts[at], starts[at + len(value)]))
            at = decoded.find(value, at + len(value))
    return _merged(spans)


def split_spans(texts: list[str], forms: Iterable[str]
                ) -> tuple[list[list[tuple[int, int]]], int]:
    """For each of ``texts`` (adjacent items, read joined), the spans that belong to an
    occurrence of one of ``forms`` crossing a boundary between items; and how many
    such occurrences (overlapping ones as one)."""
    bounds = [0]
    for text in texts:
        bounds.append(bounds[-1] + len(text))
    joined = "".join(texts)
    found: list[tuple[int, int]] = []
    for form in forms:
        if len(form) < 2:
            continue
        for boundary in bounds[1:-1]:
            # an occurrence crossing `boundary` starts in this window
            low = max(0, boundary - len(form) + 1)
            at = joined.find(form, low, boundary + len(form) - 1)
            while 0 <= at < boundary:
                found.append((at, at + len(form)))
                at = joined.find(form, at + 1, boundary + len(form) - 1)
    per_item: list[list[tuple[int, int]]] = [[] for _ in texts]
    merged = _merged(found)
    for start, end in merged:
        # only the items the occurrence overlaps: looking at every item for each one was
        # quadratic, minutes for an upstream's list of many split occurrences
        index = bisect.bisect_right(bounds, start) - 1
        while index < len(texts) and bounds[index] < end:
            low, high = bounds[index], bounds[index + 1]
            if start < high:
                per_item[index].append((max(start, low) - low, min(end, high) - low))
            index += 1
    return per_item, len(merged)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True, slots=True)
class MediaStyle:
    """How a base64 payload was written, to write it back the same way."""

    urlsafe: bool
    padded: bool

    @property
    def is_canonical(self) -> bool:
        """Whether it is written as MCP says binary payloads are: the standard alphabet,
        padded (:func:`proctor.oversight.guard.is_base64`)."""
        return self.padded and not self.urlsafe


def decode_media(encoded: str) -> tuple[bytes, MediaStyle] | None:
    """The bytes of base64 ``encoded`` (the standard or the URL-safe alphabet, padded or
    not, no line breaks) and its style; None if it is not base64."""
    if not encoded or _MEDIA.fullmatch(encoded) is None:
        return None
    stripped = encoded.rstrip("=")
    padded = len(encoded) % 4 == 0  # as written: with what padding its length needs
    if (stripped != encoded and not padded) or len(stripped) % 4 == 1:
        return None
    urlsafe = "-" in stripped or "_" in stripped
    canonical = stripped + "=" * (-len(stripped) % 4)
    if urlsafe:
        canonical = canonical.replace("-", "+").replace("_", "/")
    try:
        return binascii.a2b_base64(canonical, strict_mode=True), MediaStyle(urlsafe, padded)
    except binascii.Error:
        return None


def encode_media(raw: bytes, style: MediaStyle) -> str:
    """``raw`` as base64 in ``style``."""
    encoded = (base64.urlsafe_b64encode(raw) if style.urlsafe else base64.b64encode(raw)
               ).decode()
    return encoded if style.padded else encoded.rstrip("=")
