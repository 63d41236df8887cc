"""The reading of text past what shows as nothing, made on bytes at C speed, against
the reading it replaced (a step of Python per character left out), kept here as the
reference: the same spans of every text, so the same findings and redactions."""

from __future__ import annotations

import base64
import bisect
import random
import re
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proctor.oversight.encodings import _SHOWS_NOTHING, _decodings, _left_out, hidden_spans
from proctor.oversight.guard import OutputGuard, known_forms

SECRETS = ("crm-Zq8r2Kx9Lm4Tn7Pv", "pässwörd-Qx7")  # made up, as test_guard's

# --- the reference: encodings' reading as it was (553789c), a step per match -------

_READ = re.compile(r"&(?:#[xX]([0-9a-fA-F]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));?"
                   r"|%([0-7][0-9a-fA-F])|\x1b\[[0-?]*[ -/]*[@-~]"
                   r"|[" + _SHOWS_NOTHING + "]")
_MAY_HIDE = re.compile(r"[&%" + _SHOWS_NOTHING + "]")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


class _Reading:
    def __init__(self, text: str) -> None:
        pieces: list[str] = []
        self._read_at: list[int] = []
        self._text_at: list[int] = []
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
                continue
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
        if at >= len(self.text):
            return self._length
        index = bisect.bisect_right(self._read_at, at) - 1
        return self._text_at[index] + at - self._read_at[index]


def _reference(text: str, forms: tuple[str, ...], run_forms: tuple[str, ...]
               ) -> list[tuple[int, int]]:
    read = text
    readings: list[_Reading] = []
    for _ in range(3):
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
        found += _runs(read, run_forms, 0)
    spans = []
    for start, end in found:
        for reading in reversed(readings):
            start, end = reading.back(start), reading.back(end)
        spans.append((start, end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _runs(text: str, forms: tuple[str, ...], depth: int) -> list[tuple[int, int]]:
    return [match.span() for match in _RUN.finditer(text)
            if any(_holds(decoded, forms, depth) for decoded in _decodings(match.group()))]


def _holds(decoded: str, forms: tuple[str, ...], depth: int) -> bool:
    return any(form in decoded for form in forms) or (
        depth + 1 < 2 and bool(_runs(decoded, forms, depth + 1)))


# --- the forms the guard searches a reading for (OutputGuard._hidden, ._long) --------

_KNOWN = sorted(set().union(*(known_forms(s) for s in SECRETS)), key=len, reverse=True)
LONG = tuple(f for f in _KNOWN if len(f) >= 8)
HIDDEN = tuple(sorted({*SECRETS, *LONG}, key=len, reverse=True))


def assert_same(text: str) -> None:
    assert hidden_spans(text, HIDDEN, LONG) == _reference(text, HIDDEN, LONG)
    assert hidden_spans(text, HIDDEN, ()) == _reference(text, HIDDEN, ())


def _refs(value: str, decimal: bool = False, semicolon: bool = True) -> str:
    end = ";" if semicolon else ""
    return "".join(f"&#{ord(c)}{end}" if decimal else f"&#x{ord(c):x}{end}" for c in value)


def _between(value: str, sep: str) -> str:
    return sep.join(value)


S, P = SECRETS
FIXTURES = [
    "", "plain text", S, "&", "&#", "&#x", "&#;", "&#0;", "&#x110000;", "&#xD800;x", "%",
    "%2", "%80", "\x1b", "\x1b[", "\x1b[31", "\x1b[31m", "&amp", "&amp;", "&ampx",
    # references without a closing `;`, greedy digits, named ones
    _refs(S, semicolon=False), _refs(S, decimal=True, semicolon=False), _refs(S),
    _refs(P, decimal=True), "&#x63&#x72m-" + S[4:], "&#x0063" + S[1:], "&#99" + S[1:],
    S[:3] + "&#45" + S[4:], S.replace("-", "&#x2d"), "x&amp" + S + "&lt;",
    # percent escapes, and references percent-encoded (a second and third reading)
    "".join(f"%{ord(c):02x}" for c in S), "%26%23x63%3B" + S[1:], "%2526%2523" + S,
    "%26%2523x63%3B" + S[1:],
    # what shows as nothing, mixed: NULs, zero-width, bidi, C1, BOM, a terminal's escapes
    _between(S, "\x00"), _between(S, "\u200b"), _between(S, "\x00\u200b\u202e"),
    _between(P, "\ufeff\u0085"), _between(S, "\x1b[1;31m"), _between(S, "\x1b"),
    _between(P, "\u00ad\u2028\u2064"), "\x00" * 5000 + S + "\x00" * 5000,
    S[:10] + "\x00" + "&#x" + "\x00" + "39;" + S[11:], "&#\x0039" + S[1:],
    # invalid UTF-8 kept byte for byte (lone surrogates), which leaving out a control
    # puts side by side
    b"\xc3\x00\xa9".decode("utf-8", "surrogateescape") + S,
    (b"\xe2\x80" + S.encode() + b"\x00\x8b").decode("utf-8", "surrogateescape"),
    "\ud83d\x00\ude00" + _between(S, "\x00"), "\udcc2\x00\udc85" + S,
    # secrets at the ends, and across the chunks the way back is counted in
    _between(S, "\x00") + "tail", "head" + _between(S, "\x00"),
    "é\x00" * 2040 + "a" + _between(S, "\x00") + "é\x00" * 3000,
    "\x00" * 4090 + _between(S, "\u200b") + "\x00" * 4096 + _between(P, "\x01") + "\x00",
    "€" * 1365 + "\x00" + _between(S, "\x07") + "€\x00" * 2000 + S + "\x00",
    # overlapping forms and runs: a secret inside its own base64 run, hex after 0x,
    # MIME-wrapped base64 (line breaks), hex of base64
    base64.b64encode(S.encode()).decode() + "\x00" + S,
    "0x" + S.encode().hex() + "\x00", "sha256-" + base64.b64encode(S.encode() * 3).decode(),
    "\r\n".join(textwrap.wrap(base64.b64encode(b"x" * 100 + P.encode() + b"y" * 50)
                              .decode(), 76)),
    "\n".join(textwrap.wrap(base64.b64encode(S.encode()).hex(), 8)),
    _between(S, "\x00") + _between(S, "\x00")[1:], S + "\x00" + S + "\x00" + S,
    # a reference a reading makes (leaving out, decoding), found by the next one near
    # where the bytes were joined, past what was left out before
    "\x00" * 20 + "y" * 30 + "&\x00#x63;" + S[1:], "\x00" * 20 + "&\x00\x00#\x00x63" + S[1:],
    "y" * 30 + "&%00#x63;" + S[1:], "y" * 30 + "%26%00#x63;" + S[1:] + "&quo%74;",
    "\u200b" * 9 + "%2" + "\x00" * 3 + "6#99" + S[1:], "%2526#x63;" + S[1:],
]


@pytest.mark.parametrize("text", FIXTURES)
def test_the_reading_finds_what_the_reference_finds_on_fixtures(text: str) -> None:
    assert_same(text)


def test_the_fixtures_find_secrets() -> None:
    """The fixtures exercise the way back: most of them hold a secret a reading finds."""
    found = sum(bool(_reference(text, HIDDEN, LONG)) for text in FIXTURES)
    assert found >= 35


@pytest.mark.parametrize("seed", range(6))
def test_random_media_with_hidden_secrets_reads_as_the_reference_does(seed: int) -> None:
    rng = random.Random(seed)
    raw = bytearray(rng.randbytes(20_000))
    for _ in range(4):
        at = rng.randrange(len(raw))
        form = rng.choice([S.encode(), P.encode("utf-16-le"), _refs(S).encode(),
                           _between(P, "\x00").encode(), _between(S, "\u200b").encode()])
        raw[at:at] = form
    text = bytes(raw).decode("utf-8", "surrogateescape")
    spans = hidden_spans(text, HIDDEN, LONG)
    assert spans == _reference(text, HIDDEN, LONG)
    assert spans  # the hidden ones are found


def test_what_the_bytes_leave_out_is_what_shows_as_nothing() -> None:
    every = "".join(map(chr, range(0x110000)))
    kept = _left_out(every.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")
    assert kept == re.sub("[" + _SHOWS_NOTHING + "]", "", every)


_PIECES = st.sampled_from([
    *S, *P[:3], "&", "#", "x", "X", ";", "%", "2", "6", "3", "7", "0", "amp", "lt",
    "\x00", "\x01", "\n", "\r\n", "\u200b", "\u202e", "\ufeff", "\u0085", "\u00ad",
    "\x1b", "\x1b[", "m", "é", "€", "😀", "\udcc3", "\udca9", "\ud83d", "\ude00",
    S, S[:7], S[7:], P, _refs(S[:5]), _refs(S[5:9], semicolon=False),
    base64.b64encode(S.encode()).decode(), S.encode().hex(), "0x", "=", "+", "/",
])


@settings(derandomize=True, max_examples=400, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=60).map("".join))
@example(_refs(S, semicolon=False) + "\x00")
@example("\x00".join(_refs(S)))
def test_the_reading_finds_what_the_reference_finds(text: str) -> None:
    assert_same(text)


def test_media_is_redacted_as_the_reference_spans_say() -> None:
    """Through the guard: a text blob with three hidden secrets, redacted where the
    reference reading places them."""
    guard = OutputGuard(known_secrets=SECRETS, detect_high_entropy=False)
    lines = ["lorem ipsum dolor sit amet"] * 3000
    lines[100] += _between(S, "\x00")
    lines[1500] += _refs(P, semicolon=False)
    lines[2900] += _between(S, "\u200b")
    text = "\n".join(lines)
    blob = base64.b64encode(text.encode()).decode()
    redacted, found = guard.redact_media(blob)
    spans = _reference(text, HIDDEN, LONG)
    assert found == len(spans) == 3
    expected = text
    for start, end in reversed(spans):
        expected = expected[:start] + "[REDACTED:known_secret]" + expected[end:]
    assert base64.b64decode(redacted).decode() == expected
