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
items and only near their boundaries. A reading runs on the text's UTF-8 at C speed
(what shows as nothing deleted by ``bytes.translate``; its references found by the
regex engine, after the first reading only near where it joined bytes), a step of
Python per reference decoded, never per character left out; the way back to the
text's positions is counted only for what is found.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["MediaStyle", "decode_media", "encode_media", "hex_forms", "hidden_spans",
           "pairs_of", "split_spans"]

# numeric references (with or without the `;` browsers forgive) and XML's named five;
# percent escapes of ASCII; and what shows as nothing: C0 and C1 controls (NUL, line
# breaks), the soft hyphen, zero-width and bidi formatting characters, the BOM
_SHOWS_NOTHING = "\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff"
_DECODED = (r"&(?:#[xX]([0-9a-fA-F]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));?"
            r"|%([0-7][0-9a-fA-F])|\x1b\[[0-?]*[ -/]*[@-~]")  # a terminal's escape
_MAY_HIDE = re.compile(r"[&%" + _SHOWS_NOTHING + "]")
# A reading is made on the text's UTF-8 (lone surrogates passed through: one to one,
# and every character's bytes stand apart), where what shows as nothing is deleted at
# C speed (bytes.translate for the controls of one byte, a substitution for the rare
# others: the C1 controls, U+00AD, U+200B-U+200F, U+2028-U+202E, U+2060-U+2064,
# U+FEFF), never a step of Python per character left out: _DECODED's matches on the
# bytes are its matches on the text (its pattern is ASCII, which UTF-8 keeps as is and
# no other character's bytes hold), and what is left between them is read as it is.
_DECODED_BYTES = re.compile(_DECODED.encode())
_CONTROLS = bytes(range(0x20)) + b"\x7f"
_WIDE_NOTHING = (rb"\xc2[\x80-\x9f\xad]|\xe2\x80[\x8b-\x8f\xa8-\xae]|\xe2\x81[\xa0-\xa4]"
                 rb"|\xef\xbb\xbf")
_WIDE_NOTHING_BYTES = re.compile(_WIDE_NOTHING)
_NOTHING_BYTES = re.compile(rb"[\x00-\x1f\x7f]|" + _WIDE_NOTHING)
_MAY_HIDE_BYTES = re.compile(rb"[&%\x00-\x1f\x7f]|" + _WIDE_NOTHING)
_NOT_CONTINUATION = bytes(range(0x80)) + bytes(range(0xc0, 0x100))  # deleted to count
_CHUNK = 4096  # bytes of a stretch counted at once to map a position back through it
# A reading's joins are listed while there are fewer than one per _JOIN_SPACING bytes
# (and _MAX_JOINS): the next reading then tries its pattern only near them, a step of
# Python per join against a pass of the regex engine over the whole reading
_MAX_JOINS = 64
_JOIN_SPACING = 1024
_LONGEST_MATCH = 10  # of _DECODED but a terminal's escape (&#x10FFFF; &#1114111;)
_MATCH_STARTS = re.compile(rb"[&%\x1b]")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_MEDIA = re.compile(r"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")
_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")  # base64 (either alphabet) or hex
_RUN_BYTES = re.compile(_RUN.pattern.encode())
# a run's characters as "a", any other byte as a space: no 16 "a" in a row, no run (a
# search at C speed before _RUN's, which tries a match at each of its characters)
_RUN_SHAPE = bytes(0x61 if re.fullmatch(r"[A-Za-z0-9+/_-]", chr(b)) else 0x20
                   for b in range(256))
_MIN_RUN = 16  # the shortest stretch decoded, as _RUN's
_RUN_NEEDLE = b"a" * _MIN_RUN
_HEX_STRETCH = re.compile(r"[0-9a-fA-F]{16,}")
_STANDARD_STRETCH = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_URLSAFE_STRETCH = re.compile(r"[A-Za-z0-9_-]{16,}={0,2}")
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9]+={0,2}")
_READINGS = 3  # a reading of a reading...: a reference percent-encoded, twice
_RUN_DEPTH = 2  # a run, and the runs inside what it decodes to


def hex_forms(raw: bytes) -> set[str]:
    """``raw`` hex-encoded, in lower and upper case."""
    return {raw.hex(), raw.hex().upper()}


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _left_out(data: bytes) -> bytes:
    """``data`` (UTF-8) without what shows as nothing."""
    data = data.translate(None, _CONTROLS)
    return _WIDE_NOTHING_BYTES.sub(b"", data) if b"\xc2" in data or b"\xe2" in data \
        or b"\xef" in data else data


class _Reading:
    """``data`` (a text's UTF-8) as a reader reads it: references and escapes decoded,
    what shows as nothing left out; and the way back from a position in it to one in
    ``data``, searched by bisection among its pieces (a stretch read as it is, less what
    it leaves out, or one decoded character), then in the stretch by counting what it
    leaves out, a chunk at a time."""

    def __init__(self, data: bytes, previous: _Reading | None = None) -> None:
        """``previous``: the reading ``data`` is, if it is one. Then it holds what shows
        as nothing only where that reading decoded a character (the rest of a reading
        holds none), and a reference or escape only across one of its joins: a match
        not across one would lie in what that reading kept as it was, between two of
        its matches, where there was none."""
        self._data = data
        self._dirty = previous.decoded_at if previous is not None else None
        self.decoded_at: list[int] = []  # where this reading's decoded characters are
        # where its bytes were not side by side in `data` (a decoded character, one
        # after it, one after what was left out); None: too many to be worth a list
        self.joins: list[int] | None = []
        parts: list[bytes] = []
        self._read_at: list[int] = []  # where each piece starts in the reading
        # and in `data`, with its end there (None: a decoded character)
        self._spans: list[tuple[int, int | None]] = []
        self._chunks: dict[int, tuple[list[int], list[int]]] = {}  # per stretch, made once
        size = done = 0
        joins = previous.joins if previous is not None else None
        matches = _DECODED_BYTES.finditer(data) if joins is None else _across(data, joins)
        for match in matches:
            if match.start() > done:
                size = self._stretch(parts, size, done, match.start())
            done = match.end()
            self._join(size)
            hexa, decimal, named, escaped = match.groups()
            if named:
                char = _NAMED[named.decode()]
            elif hexa or decimal:
                code = int(hexa, 16) if hexa else int(decimal)
                char = chr(code) if 0 < code < 0x110000 else "\ufffd"
            elif escaped:
                char = chr(int(escaped, 16))
            else:
                continue  # a terminal's escape: shows as nothing
            self._read_at.append(size)
            self._spans.append((match.start(), None))
            self.decoded_at.append(size)
            encoded = _utf8(char)
            parts.append(encoded)
            size += len(encoded)
            self._join(size)
        self._stretch(parts, size, done, len(data))
        self.data = b"".join(parts) if len(parts) != 1 else parts[0]

    def _join(self, at: int) -> None:
        if self.joins is not None:
            self.joins.append(at)
            if len(self.joins) > _MAX_JOINS + len(self._data) // _JOIN_SPACING:
                self.joins = None

    def _stretch(self, parts: list[bytes], size: int, start: int, end: int) -> int:
        self._join(size)
        if self._dirty is not None:  # clean but for the characters decoded there
            kept = self._cleaned(self._dirty, size, start, end)
        else:
            kept = _left_out(self._data[start:end])
            left_out = end - start - len(kept)
            if left_out and self.joins is not None:
                if len(self.joins) + left_out > _MAX_JOINS + len(self._data) // _JOIN_SPACING:
                    self.joins = None
                else:
                    gone_before = 0
                    for gone in _NOTHING_BYTES.finditer(self._data, start, end):
                        self.joins.append(size + gone.start() - start - gone_before)
                        gone_before += gone.end() - gone.start()
        if kept:
            self._read_at.append(size)
            self._spans.append((start, end))
            parts.append(kept)
        return size + len(kept)

    def _cleaned(self, dirty: list[int], size: int, start: int, end: int) -> bytes:
        """``data[start:end]`` less the characters decoded there (at ``dirty``, by the
        reading it is) that show as nothing."""
        low, high = bisect.bisect_left(dirty, start), bisect.bisect_left(dirty, end)
        if low == high:
            return self._data[start:end]
        pieces: list[bytes] = []
        kept = 0
        done = start
        for at in dirty[low:high]:
            lead = self._data[at]
            width = 1 if lead < 0x80 else 2 if lead < 0xe0 else 3 if lead < 0xf0 else 4
            if not _left_out(self._data[at:at + width]):
                pieces.append(self._data[done:at])
                kept += at - done
                self._join(size + kept)
                done = at + width
        pieces.append(self._data[done:end])
        return b"".join(pieces)

    def back(self, positions: Iterable[int]) -> dict[int, int]:
        """The position in ``data`` of each of ``positions`` of the reading (its
        length: the data's): a step of Python per byte left out in the chunks they
        fall in, once for them all, however many fall there."""
        out: dict[int, int] = {}
        in_chunks: dict[tuple[int, int], list[int]] = {}
        for at in positions:
            if at >= len(self.data):
                out[at] = len(self._data)
                continue
            index = bisect.bisect_right(self._read_at, at) - 1
            start, end = self._spans[index]
            if end is None:
                out[at] = start
                continue
            _, before = self._chunks_of(index, start, end)
            chunk = bisect.bisect_right(before, at - self._read_at[index],
                                        hi=len(before) - 1) - 1
            in_chunks.setdefault((index, chunk), []).append(at)
        for (index, chunk), ats in in_chunks.items():
            bounds, before = self._chunks[index]
            first = self._read_at[index] + before[chunk]  # its first byte kept, read
            left_out = _NOTHING_BYTES.finditer(self._data, bounds[chunk], bounds[chunk + 1])
            gone = next(left_out, None)
            shift = 0  # the bytes left out before the position
            for at in sorted(set(ats)):
                position = bounds[chunk] + at - first + shift
                while gone is not None and gone.start() <= position:
                    shift += gone.end() - gone.start()
                    position += gone.end() - gone.start()
                    gone = next(left_out, None)
                out[at] = position
        return out

    def _chunks_of(self, index: int, start: int, end: int) -> tuple[list[int], list[int]]:
        """Where the stretch's chunks start in ``data`` (of _CHUNK bytes, each ending
        where a character does, and its end), and how much the chunks before each keep."""
        if index not in self._chunks:
            bounds, before = [start], [0]
            while bounds[-1] < end:
                cut = min(end, bounds[-1] + _CHUNK)
                while cut < end and 0x80 <= self._data[cut] < 0xc0:  # inside a character
                    cut += 1
                before.append(before[-1] + len(_left_out(self._data[bounds[-1]:cut])))
                bounds.append(cut)
            self._chunks[index] = (bounds, before)
        return self._chunks[index]


def _across(data: bytes, joins: list[int]) -> Iterator[re.Match[bytes]]:
    """_DECODED_BYTES.finditer(data) for a reading whose joins are ``joins``: a match
    holds one (a terminal's escape starts at one: its ESC is a decoded character), so
    starts at most _LONGEST_MATCH - 1 bytes before it; the first that matches of those
    starts, then the first past its end, as finditer takes them."""
    starts: set[int] = set()
    for join in joins:
        starts.update(start.start() for start in _MATCH_STARTS.finditer(
            data, max(0, join - _LONGEST_MATCH + 1), join + 1))
    done = 0
    for start in sorted(starts):
        if start >= done:
            match = _DECODED_BYTES.match(data, start)
            if match is not None:
                done = match.end()
                yield match


def hidden_spans(text: str, forms: tuple[str, ...], run_forms: tuple[str, ...]
                 ) -> list[tuple[int, int]]:
    """The spans of ``text`` that hold one of ``forms`` as a reader reads it, or in a
    run of base64 or hex (of that reading) that decodes to bytes holding one of
    ``run_forms``; sorted, not overlapping. ``text`` is assumed searched for ``forms``
    as it is."""
    if _MAY_HIDE.search(text) is None:  # nothing to read past: its runs only
        return _merged(_encoded_runs(text, run_forms, 0)) if run_forms else []
    read = data = _utf8(text)
    readings: list[_Reading] = []
    for _ in range(_READINGS):
        if _MAY_HIDE_BYTES.search(read) is None:
            break
        reading = _Reading(read, readings[-1] if readings else None)
        if reading.data == read:
            break
        readings.append(reading)
        read = reading.data
    found: list[tuple[int, int]] = []
    if readings:
        # a form's bytes start a character wherever they are found (no character's
        # first byte is another's later one), so these are its occurrences in the text
        for form in (_utf8(form) for form in forms):
            at = read.find(form)
            while at >= 0:
                found.append((at, at + len(form)))
                at = read.find(form, at + len(form))
    if run_forms:
        found += _encoded_runs(read, run_forms, 0)
    if not found:
        return []
    for reading in reversed(readings):
        back = reading.back(at for span in found for at in span)
        found = [(back[start], back[end]) for start, end in found]
    return _characters(data, _merged(found))


def _characters(data: bytes, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (sorted) of UTF-8 ``data`` as spans of the text it encodes: each byte
    offset less the bytes before it that continue a character, counted from the last."""
    out: list[tuple[int, int]] = []
    byte = char = 0
    for start, end in spans:
        char += len(data[byte:start].translate(None, _NOT_CONTINUATION))
        char_start = start - char
        char += len(data[start:end].translate(None, _NOT_CONTINUATION))
        byte = end
        out.append((char_start, end - char))
    return out


def _encoded_runs(text: str | bytes, forms: tuple[str, ...], depth: int
                  ) -> list[tuple[int, int]]:
    """The runs of base64 or hex in ``text`` (spans of its UTF-8, if bytes) whose bytes
    hold one of ``forms``, there or in a run inside them (``depth`` levels down at
    most)."""
    data = text if isinstance(text, bytes) else _utf8(text)
    found: list[tuple[int, int]] = []
    for start, end in _runs(data):
        if any(_holds(decoded, forms, depth) for decoded in _decodings(data[start:end].decode())):
            found.append((start, end))
    if found and not isinstance(text, bytes):
        return _characters(data, found)
    return found


def _runs(data: bytes) -> list[tuple[int, int]]:
    """The spans of _RUN.finditer(data): each starts a stretch of 16 of its characters
    or more (found at C speed in data's shape), where no match before it can end."""
    shape = data.translate(_RUN_SHAPE)
    spans: list[tuple[int, int]] = []
    at = shape.find(_RUN_NEEDLE)
    while at >= 0:
        match = _RUN_BYTES.match(data, shape.rfind(b" ", 0, at) + 1)
        if match is None:  # never: 16 of its characters at least start there
            break
        spans.append(match.span())
        at = shape.find(_RUN_NEEDLE, match.end())
    return spans


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
