"""The encodings a known secret can hide in that plain substring search does not see,
for :class:`proctor.oversight.guard.OutputGuard`.

- **hex** (lower and upper case) is a fixed string per secret: a form like the others
  (:func:`hex_forms`), also searched in decoded media;
- **what a reader reads past** (:func:`hidden_spans`): HTML character references
  (``&#x74;``, ``&#116;``, ``&amp;``…) and percent escapes, for some characters or
  all, and what shows as nothing (NUL and the other C0 and C1 controls, a terminal's
  escape sequences, line breaks, zero-width and bidi formatting characters), such as
  the line breaks
  of base64 wrapped at 76 columns (MIME): text holding any of them is read with the
  references and escapes decoded and those characters left out (twice more if that
  leaves more to decode: a reference percent-encoded), and a secret found there is
  redacted over the span of the original text it came from;
- **stacked encodings** (:func:`hidden_spans` too): each run of 16 or more base64 or
  hex characters of that reading is decoded, wherever the encoded text starts in it
  (after a prefix such as ``0x`` or ``sha256-``: each stretch of hex from its first two
  digits, each stretch of one base64 alphabet from its first four characters), and a
  run whose bytes hold a known form
  of a secret (its hex, its base64, its percent-encoding: base64 of hex, hex of
  base64…), or a run inside them that does (one level more), is redacted whole;
- **split across adjacent text items** (two ``text`` content blocks, two strings of a
  list, the string values of one object), as a client would read them joined: each
  form is looked for across each boundary only, in a window as long as the form
  (:func:`split_spans`);
- **base64 media** that is unpadded or URL-safe: decoded as such and encoded back the
  same way (:func:`decode_media`, :func:`encode_media`).

Each is bounded and linear in the text: a reading runs only on text holding one of
the characters it reads past (three passes at most), a run is decoded once per
alphabet and the bytes it decodes to are searched one level down at most (each
level shorter than the one above), a split pass runs only on two or more text
items and only near their boundaries.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["MediaStyle", "decode_media", "encode_media", "hex_forms", "hidden_spans",
           "pairs_of", "split_spans"]

# numeric references (with or without the `;` browsers forgive) and XML's named five;
# percent escapes of ASCII; and what shows as nothing: C0 and C1 controls (NUL, line
# breaks), the soft hyphen, zero-width and bidi formatting characters, the BOM
_SHOWS_NOTHING = "\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff"
_READ = re.compile(r"&(?:#[xX]([0-9a-fA-F]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));?"
                   r"|%([0-7][0-9a-fA-F])|\x1b\[[0-?]*[ -/]*[@-~]"  # a terminal's escape
                   r"|[" + _SHOWS_NOTHING + "]")
_MAY_HIDE = re.compile(r"[&%" + _SHOWS_NOTHING + "]")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_MEDIA = re.compile(r"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")
_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")  # base64 (either alphabet) or hex
_MIN_RUN = 16  # the shortest stretch decoded, as _RUN's
_HEX_STRETCH = re.compile(r"[0-9a-fA-F]{16,}")
_STANDARD_STRETCH = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_URLSAFE_STRETCH = re.compile(r"[A-Za-z0-9_-]{16,}={0,2}")
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9]+={0,2}")
_READINGS = 3  # a reading of a reading...: a reference percent-encoded, twice
_RUN_DEPTH = 2  # a run, and the runs inside what it decodes to


def hex_forms(raw: bytes) -> set[str]:
    """``raw`` hex-encoded, in lower and upper case."""
    return {raw.hex(), raw.hex().upper()}


class _Reading:
    """``text`` as a reader reads it (references and escapes decoded, what shows as
    nothing left out), and the way back from a position in it to one in ``text``: the
    offsets where each piece (a run of text as it is, or one decoded character)
    starts in both, searched by bisection."""

    def __init__(self, text: str) -> None:
        pieces: list[str] = []
        self._read_at: list[int] = []  # where each piece starts in the reading
        self._text_at: list[int] = []  # and in `text`
        self._length = len(text)
        size = done = 0
        for match in _READ.finditer(text):
            if match.start() > done:
                self._piece(size, done)
                pieces.append(text[done:match.start()])
                size += match.start() - done
            done = match.end()
            hexa, decimal, named, escaped = match.groups()
            if named:
                char = _NAMED[named]
            elif hexa or decimal:
                code = int(hexa, 16) if hexa else int(decimal)
                char = chr(code) if 0 < code < 0x110000 else "\ufffd"
            elif escaped:
                char = chr(int(escaped, 16))
            else:
                continue  # shows as nothing
            self._piece(size, match.start())
            pieces.append(char)
            size += 1
        self._piece(size, done)
        pieces.append(text[done:])
        self.text = "".join(pieces)

    def _piece(self, read_at: int, text_at: int) -> None:
        self._read_at.append(read_at)
        self._text_at.append(text_at)

    def back(self, at: int) -> int:
        """The position in ``text`` of position ``at`` of the reading (its length:
        the text's)."""
        if at >= len(self.text):
            return self._length
        index = bisect.bisect_right(self._read_at, at) - 1
        return self._text_at[index] + at - self._read_at[index]


def hidden_spans(text: str, forms: tuple[str, ...], run_forms: tuple[str, ...]
                 ) -> list[tuple[int, int]]:
    """The spans of ``text`` that hold one of ``forms`` as a reader reads it, or in a
    run of base64 or hex (of that reading) that decodes to bytes holding one of
    ``run_forms``; sorted, not overlapping. ``text`` is assumed searched for ``forms``
    as it is."""
    read = text
    readings: list[_Reading] = []
    for _ in range(_READINGS):
        if _MAY_HIDE.search(read) is None:
            break
        reading = _Reading(read)
        if reading.text == read:
            break
        readings.append(reading)
        read = reading.text
    found: list[tuple[int, int]] = []
    if readings:
        for form in forms:
            at = read.find(form)
            while at >= 0:
                found.append((at, at + len(form)))
                at = read.find(form, at + len(form))
    if run_forms:
        found += _encoded_runs(read, run_forms, 0)
    spans: list[tuple[int, int]] = []
    for start, end in found:
        for reading in reversed(readings):
            start, end = reading.back(start), reading.back(end)
        spans.append((start, end))
    return _merged(spans)


def _encoded_runs(text: str, forms: tuple[str, ...], depth: int) -> list[tuple[int, int]]:
    """The runs of base64 or hex in ``text`` whose bytes hold one of ``forms``, there or
    in a run inside them (``depth`` levels down at most)."""
    found: list[tuple[int, int]] = []
    for match in _RUN.finditer(text):
        if any(_holds(decoded, forms, depth) for decoded in _decodings(match.group())):
            found.append(match.span())
    return found


def _decodings(run: str) -> list[str]:
    """What ``run`` decodes to as hex and as base64, wherever the encoded text starts in
    it (after a prefix such as ``0x`` or ``sha256-``), as text (bytes that are not UTF-8
    replaced): each stretch of hex digits from its first and its second digit, and each
    stretch of one base64 alphabet (split at the other's characters) from each of its
    first four characters (a stray last character left out). Each character is decoded
    at most ten times: linear."""
    decoded: list[bytes] = []
    for stretch in _HEX_STRETCH.findall(run):
        for start in (0, 1):
            body = stretch[start:len(stretch) - (len(stretch) - start) % 2]
            if len(body) >= _MIN_RUN:
                decoded.append(bytes.fromhex(body))
    # a stretch without its alphabet's own characters lies inside one of the other's
    # that is decoded (or is the whole run): decoding it again would find nothing more
    stretches = [run] if _ALPHANUMERIC.fullmatch(run) else [
        *(s for s in _STANDARD_STRETCH.findall(run) if "+" in s or "/" in s),
        *(s for s in _URLSAFE_STRETCH.findall(run) if "-" in s or "_" in s)]
    for stretch in stretches:
        stripped = stretch.rstrip("=")
        urlsafe = "-" in stripped or "_" in stripped
        for start in range(4):
            body = stripped[start:]
            body = body[:len(body) - (1 if len(body) % 4 == 1 else 0)]
            if len(body) < _MIN_RUN:
                break
            canonical = body + "=" * (-len(body) % 4)
            if urlsafe:
                canonical = canonical.replace("-", "+").replace("_", "/")
            try:
                decoded.append(binascii.a2b_base64(canonical, strict_mode=True))
            except binascii.Error:
                continue
    return [raw.decode("utf-8", "replace") for raw in decoded]


def _holds(decoded: str, forms: tuple[str, ...], depth: int) -> bool:
    if any(form in decoded for form in forms):
        return True
    return depth + 1 < _RUN_DEPTH and bool(_encoded_runs(decoded, forms, depth + 1))


def pairs_of(forms: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The forms holding each two adjacent characters: an occurrence crossing a boundary
    between items holds the pair on either side of it."""
    holding: dict[str, dict[str, None]] = {}
    for form in forms:
        for i in range(len(form) - 1):
            holding.setdefault(form[i:i + 2], {})[form] = None
    return {pair: tuple(found) for pair, found in holding.items()}


def split_spans(texts: list[str], forms: Iterable[str],
                pairs: Mapping[str, tuple[str, ...]] | None = None
                ) -> tuple[list[list[tuple[int, int]]], int]:
    """For each of ``texts`` (adjacent items, read joined), the spans that belong to an
    occurrence of one of ``forms`` crossing a boundary between items; and how many
    such occurrences (overlapping ones as one). ``pairs``: :func:`pairs_of` ``forms``
    (at each boundary only the forms holding its two characters are looked for)."""
    bounds = [0]
    for text in texts:
        bounds.append(bounds[-1] + len(text))
    joined = "".join(texts)
    if pairs is None:
        pairs = pairs_of(forms)
    found: list[tuple[int, int]] = []
    for boundary in bounds[1:-1]:
        for form in pairs.get(joined[boundary - 1:boundary + 1], ()):
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
