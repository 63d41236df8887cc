"""The output guard: secrets found in what a tool returns are redacted before an agent sees it.

:meth:`OutputGuard.scan` walks a JSON value (strings, mappings, lists — an MCP
result as JSON) and returns a redacted copy, what was found where, and the
proctor grants it saw. In each string, in this order:

1. **known secrets** — the values the gateway injected into the upstream, also
   JSON-escaped, percent-encoded, hex-encoded (lower and upper case) and
   base64-encoded (standard and URL-safe, padded or not, at any of the three offsets
   a secret can start at inside longer base64 — an HTTP Basic credential, a file —
   without the characters it shares with its neighbours), written with HTML
   character references or percent escapes, with what shows as nothing in between
   (controls, zero-width characters, line breaks), or inside a run of base64 or hex
   that decodes to one of these (:mod:`proctor.oversight.encodings`): ``known_secret``;
2. **JWTs** — one whose unverified ``iss`` is proctor's own is a leaked grant
   (``proctor_grant``; the raw token goes to the caller, who verifies and revokes
   it); any other is ``jwt``;
3. **well-known formats** (:mod:`proctor.credentials.formats`): cloud and forge
   tokens, private keys, bearer and basic credentials, passwords in URLs,
   ``password=…`` pairs;
4. **random-looking strings** (:mod:`proctor.credentials.entropy`): ``high_entropy``.

Each hit becomes ``[REDACTED:<kind>]``. In mappings, the value of a key that
names a secret (``password``, ``api_key``, ``Authorization``…) is redacted
whole (``credential_pair``), and base64 media (``data``/``blob`` beside a
``mimeType``, if it is base64) is searched for known secrets only, as text and decoded
(:meth:`OutputGuard.redact_media`). In lists, a known secret split across adjacent
text items (strings, or ``text`` content blocks), as a client reading them joined
would see it, is redacted in each. Findings name the kind and the JSON Pointer of
the string, never the secret.

>>> guard = OutputGuard(known_secrets=["s3cr3t-value"])
>>> result = guard.scan({"content": [{"type": "text", "text": "key is s3cr3t-value"}]})
>>> result.value["content"][0]["text"], result.findings
('key is [REDACTED:known_secret]', (Finding(kind='known_secret', path='/content/0/text'),))
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from proctor.credentials.entropy import find_random_looking
from proctor.credentials.formats import JWT, is_placeholder, is_secret_key, redact_formats
from proctor.documents import MAX_DEPTH
from proctor.errors import GuardError
from proctor.jose import b64url_encode
from proctor.oversight.encodings import (
    decode_media,
    encode_media,
    hex_forms,
    hidden_spans,
    pairs_of,
    split_spans,
)
from proctor.oversight.tokens import unverified_issuer

__all__ = ["MAX_DEPTH", "Finding", "GuardResult", "OutputGuard", "is_base64", "is_media",
           "known_forms", "redaction"]

# Base64 media in MCP content (image and audio ``data``, resource ``blob``, next to a
# ``mimeType``): random by nature, so only known secrets are looked for there.
_BINARY_FIELDS = frozenset({"data", "blob"})
_ENCODED_MIN_CHARS = 8  # shorter secrets are matched as they are only
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_HEX = re.compile(r"%[0-9A-F]{2}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def is_base64(text: str) -> bool:
    """Whether ``text`` is base64 as MCP's binary payloads are (the standard alphabet,
    padded, no line breaks): only such text is searched as media; any other is text."""
    return len(text) % 4 == 0 and _BASE64.fullmatch(text) is not None


def is_media(text: str) -> bool:
    """Whether ``text`` may be a binary payload: base64 in the standard or the URL-safe
    alphabet, padded or not. Only :func:`is_base64` is MCP's; the others are searched
    as media (known secrets, in the bytes) and for credential formats as text."""
    return decode_media(text) is not None


def redaction(kind: str) -> str:
    """What replaces a secret of ``kind``: ``[REDACTED:<kind>]``."""
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True, slots=True)
class Finding:
    """One secret redacted: its kind, and the JSON Pointer of the string it was in."""

    kind: str
    path: str


@dataclass(frozen=True, slots=True)
class GuardResult:
    """The redacted copy, what was found, and the raw proctor grants seen (not in repr)."""

    value: Any
    findings: tuple[Finding, ...]
    grant_tokens: tuple[str, ...] = field(default=(), repr=False)

    def counts(self) -> dict[str, int]:
        """How many of each kind were redacted, for an audit event."""
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        return counts


class _Scan:
    """The state of one scan: findings and grants, in the order met."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.grants: dict[str, None] = {}


class OutputGuard:
    """Redacts secrets out of tool results. Safe to share between threads."""

    def __init__(self, *, known_secrets: Iterable[str] = (), grant_issuer: str | None = None,
                 detect_high_entropy: bool = True) -> None:
        self._grant_issuer = grant_issuer
        self._entropy = detect_high_entropy
        self._lock = threading.Lock()
        self._known: tuple[str, ...] = ()
        # what a reading of text (references decoded, what shows as nothing left out)
        # may hold: the values as given, and the forms of 8 characters or more; those
        # forms are what the bytes of a run of base64 or hex are searched for
        self._values: tuple[str, ...] = ()
        self._hidden: tuple[str, ...] = ()
        self._long: tuple[str, ...] = ()
        self._pairs: dict[str, tuple[str, ...]] = {}  # of the known forms (split matching)
        self._shortest_hidden = 0  # no text shorter is read (a reading only shortens)
        # the forms that are not base64, as bytes: what decoded media is searched for
        self._plain_bytes: tuple[bytes, ...] = ()
        for value in known_secrets:
            self.add_known_secret(value)

    def __repr__(self) -> str:
        return (f"OutputGuard(known_secrets={len(self._known)} forms, "
                f"grant_issuer={self._grant_issuer!r})")

    def add_known_secret(self, value: str) -> None:
        """Always redact ``value`` (and its JSON, percent and base64 encodings, as the
        usual encoders of each write them) from now on."""
        if not isinstance(value, str) or not value:
            raise GuardError("guard_value_unsupported", "a known secret must be non-empty text")
        forms = known_forms(value)
        with self._lock:  # readers take the tuple as it is; longest first, so nested match
            known = tuple(sorted(set(self._known) | forms, key=len, reverse=True))
            self._pairs = pairs_of(known)  # before the forms: a reader never has fewer
            self._known = known
            self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))
            self._long = tuple(f for f in known if len(f) >= _ENCODED_MIN_CHARS)
            self._hidden = tuple(sorted({*self._values, *self._long}, key=len, reverse=True))
            self._shortest_hidden = len(self._hidden[-1])
            plain = {f.encode("utf-8", "surrogatepass") for f in _plain_forms(value)}
            self._plain_bytes = tuple(sorted(set(self._plain_bytes) | plain, key=len,
                                             reverse=True))

    def redact_media(self, encoded: str) -> tuple[str, int]:
        """Base64 media (an image's ``data``, a resource's ``blob``) with the known
        secrets it holds redacted, and how many it held: the bytes it decodes to are
        read as text (bytes that are not UTF-8 kept as they are) and searched as a
        result's text is for known secrets, every form and every hiding place (what
        shows as nothing, such as the NULs of UTF-16 or between a PNG's chunks;
        references; runs of base64 or hex, redacted whole), each replaced by
        ``[REDACTED:known_secret]`` and the bytes encoded again, in the alphabet and
        padding it came in, so the media stays base64 (not always a valid image
        then); the text itself for a secret given as base64 text (an alphanumeric
        one). Media that is not MCP's (unpadded, or URL-safe) is also searched for
        credential formats as text: a token alone looks like it. Text that is not
        base64 is searched as text, for every known form."""
        state = _Scan()
        decoded = decode_media(encoded)
        if decoded is None:  # not base64
            return self._known_secrets(encoded, "", state), len(state.findings)
        raw, style = decoded
        # the bytes as text (invalid UTF-8 kept byte for byte, as lone surrogates),
        # searched as a result's strings are: every form, through every hiding place
        found = 0
        if raw:
            media = _Scan()
            cleaned = self._known_secrets(raw.decode("utf-8", "surrogateescape"), "", media)
            found = len(media.findings)
            if found:
                encoded = encode_media(cleaned.encode("utf-8", "surrogateescape"), style)
        for form in self._plain_bytes:
            text = form.decode("utf-8", "surrogatepass")
            if text in encoded:
                state.findings += [Finding("known_secret", "")] * encoded.count(text)
                encoded = encoded.replace(text, redaction("known_secret"))
        if not style.is_canonical:
            encoded = self._formats(encoded, "", state)
        return encoded, found + len(state.findings)

    def scan(self, value: Any) -> GuardResult:
        """A redacted copy of ``value``, the findings and the proctor grants it holds.

        Raises :class:`GuardError` for a value it cannot read through (a type JSON does
        not have, or nesting deeper than :data:`MAX_DEPTH`): pass nothing on then.
        """
        state = _Scan()
        redacted = self._walk(value, "", 0, state)
        return GuardResult(redacted, tuple(state.findings), tuple(state.grants))

    def _walk(self, value: Any, path: str, depth: int, state: _Scan) -> Any:
        if isinstance(value, str):
            return self._text(value, path, state)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= MAX_DEPTH:
            raise GuardError("guard_value_too_deep", f"value nested deeper than {MAX_DEPTH}")
        if isinstance(value, Mapping):
            return self._mapping(value, path, depth, state)
        if isinstance(value, list | tuple):
            joined = self._split(value, path, state) if len(value) > 1 and self._known \
                else value
            items = [self._walk(item, f"{path}/{i}", depth + 1, state)
                     for i, item in enumerate(joined)]
            return items if isinstance(value, list) else tuple(items)
        raise GuardError("guard_value_unsupported",
                         f"cannot scan a value of type `{type(value).__name__}`")

    def _mapping(self, value: Mapping[Any, Any], path: str, depth: int,
                 state: _Scan) -> dict[str, Any]:
        out: dict[str, Any] = {}
        has_media = "mimeType" in value
        items: Iterable[tuple[Any, Any]] = value.items()
        if len(value) > 1 and self._known:  # a secret split across adjacent string values
            keys = list(value)
            items = zip(keys, self._split(list(value.values()), path, state, keys), strict=True)
        for key, item in items:
            if not isinstance(key, str):
                raise GuardError("guard_value_unsupported", "mapping keys must be text")
            key = self._text(key, path, state)
            while key in out:  # two keys redacted alike: keep both
                key += "~"
            where = f"{path}/{_pointer(key)}"
            if is_secret_key(key) and _is_secret_scalar(item):
                state.findings.append(Finding("credential_pair", where))
                out[key] = redaction("credential_pair")
            elif (has_media and key in _BINARY_FIELDS and isinstance(item, str)
                  and is_media(item)):
                out[key], found = self.redact_media(item)
                state.findings += [Finding("known_secret", where)] * found
            else:
                out[key] = self._walk(item, where, depth + 1, state)
        return out

    def _known_secrets(self, text: str, path: str, state: _Scan) -> str:
        for form in self._known:
            if form in text:
                state.findings += [Finding("known_secret", path)] * text.count(form)
                text = text.replace(form, redaction("known_secret"))
        if self._hidden and len(text) >= self._shortest_hidden:
            # read as a reader reads it, and its runs of base64 and hex
            spans = hidden_spans(text, self._hidden, self._long)
            if spans:
                state.findings += [Finding("known_secret", path)] * len(spans)
                text = _replace_spans(text, spans, redaction("known_secret"))
        return text

    def _split(self, items: list[Any] | tuple[Any, ...], path: str,
               state: _Scan, names: list[Any] | None = None) -> list[Any]:
        """``items`` with the known secrets split across adjacent text items (strings,
        or ``text`` content blocks) redacted in each piece: copies of those it changes.
        ``names``: the items' keys (an object's values), for the findings' paths."""
        out = list(items)
        texts = [_item_text(item) for item in items]
        start = 0
        while start < len(out):
            end = start
            while end < len(out) and texts[end] is not None:
                end += 1
            if end - start > 1:
                run = [t for t in texts[start:end] if t is not None]
                spans, count = split_spans(run, self._known, self._pairs)
                if count:
                    first = start if names is None else _pointer(str(names[start]))
                    state.findings += [Finding("known_secret", f"{path}/{first}")] * count
                    for index, item_spans in enumerate(spans, start):
                        if item_spans:
                            text = _replace_spans(run[index - start], item_spans,
                                                  redaction("known_secret"))
                            out[index] = text if isinstance(out[index], str) else {
                                **out[index], "text": text}
            start = end + 1
        return out

    def _formats(self, text: str, path: str, state: _Scan) -> str:
        """``text`` with JWTs and the well-known credential formats redacted."""
        if "eyJ" in text:
            text = JWT.sub(lambda match: self._jwt(match.group(), path, state), text)
        text, kinds = redact_formats(text, redaction)
        state.findings += [Finding(kind, path) for kind in kinds]
        return text

    def _text(self, text: str, path: str, state: _Scan) -> str:
        text = self._formats(self._known_secrets(text, path, state), path, state)
        if self._entropy and len(text) >= 20:
            spans = list(find_random_looking(text))
            if spans:
                state.findings += [Finding("high_entropy", path)] * len(spans)
                text = _replace_spans(text, spans, redaction("high_entropy"))
        return text

    def _jwt(self, token: str, path: str, state: _Scan) -> str:
        issuer = unverified_issuer(token)
        kind = "proctor_grant" if (issuer is not None and issuer == self._grant_issuer) else "jwt"
        if kind == "proctor_grant":
            state.grants[token] = None
        state.findings.append(Finding(kind, path))
        return redaction(kind)


def known_forms(value: str) -> set[str]:
    """``value`` and the forms it is known by: JSON-escaped, and from
    :data:`_ENCODED_MIN_CHARS` characters on percent-encoded and base64 (whole, and
    inside longer base64)."""
    forms = _plain_forms(value)
    if len(value) >= _ENCODED_MIN_CHARS:
        raw = value.encode("utf-8", "surrogatepass")
        forms |= {base64.b64encode(raw).decode().rstrip("="), b64url_encode(raw),
                  *_base64_cores(raw)}
    return forms


def _plain_forms(value: str) -> set[str]:
    """``value``, JSON-escaped, and (from :data:`_ENCODED_MIN_CHARS` characters on)
    percent- and hex-encoded: its forms but base64's."""
    forms = {value, *_json_forms(value)}
    if len(value) >= _ENCODED_MIN_CHARS:
        forms |= _percent_forms(value) | hex_forms(value.encode("utf-8", "surrogatepass"))
    return forms


def _json_forms(value: str) -> set[str]:
    """``value`` inside a JSON string, as encoders write it: non-ASCII escaped (Python's
    default) or not (JavaScript's), ``&<>`` as ``\\u0026`` … (Go's), ``/`` as ``\\/``."""
    forms: set[str] = set()
    for form in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        go = form.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
        forms |= {form, go, form.replace("/", "\\/")}
    return forms


def _percent_forms(value: str) -> set[str]:
    """``value`` percent-encoded as encoders write it: every reserved character
    (``quote(safe="")``), ``/`` kept (``quote``'s default), ``!'()*`` kept (JavaScript's
    ``encodeURIComponent``), a space as ``+`` (forms, ``quote_plus``); hex digits in
    upper and lower case."""
    forms = {quote(value, safe=""), quote(value), quote(value, safe="!'()*~"),
             quote_plus(value, safe="")}
    return forms | {_HEX.sub(lambda m: m.group().lower(), form) for form in forms}


def _base64_cores(raw: bytes) -> set[str]:
    """What base64 (standard and URL-safe) holds of ``raw`` wherever it starts in longer
    data: for each of the three offsets in a 3-byte group, the characters made of
    ``raw``'s bits only (the first and last may share bits with its neighbours)."""
    cores: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw)
        first = (8 * offset + 5) // 6  # the first character past the offset's bits
        core = encoded[first:8 * (offset + len(raw)) // 6]
        cores |= {core.decode(), core.translate(_URLSAFE).decode()}
    return cores


def _item_text(item: Any) -> str | None:
    """The text of a list item a client reads as text: a string, or a ``text`` block."""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and item.get("type") == "text":
        text = item.get("text")
        return text if isinstance(text, str) else None
    return None


def _is_secret_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return not is_placeholder(value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pointer(key: str) -> str:
    """A mapping key as a JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _replace_spans(text: str, spans: list[tuple[int, int]], mark: str) -> str:
    pieces: list[str] = []
    done = 0
    for start, end in spans:
        pieces += (text[done:start], mark)
        done = end
    return "".join(pieces) + text[done:]
