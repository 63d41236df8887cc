"""Well-known credential formats, and keys that name secrets: one table for all of proctor.

The audit log masks with it (``[masked:<kind>]``) and the gateway's output guard
redacts with it (``[REDACTED:<kind>]``). This module imports nothing else of
proctor, so that both can use it without an import cycle.

Every pattern is linear in its input: a pattern starts only where its first
character cannot continue a longer run (a look-behind, not ``\\b``), so that a
long run such as ``-eyJ-eyJ-eyJ…`` is scanned once, not once per position.

>>> redact_formats("auth: Bearer abc.def", lambda kind: f"<{kind}>")
('auth: Bearer <bearer>', ['bearer'])
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FORMATS", "JWT", "CredentialFormat", "is_placeholder", "is_secret_key",
           "redact_formats"]

# Matched against the key's last words, after camelCase became snake_case.
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:pass(?:word|wd|phrase)?|pwd|secret|token|auth|authori[sz]ation|api_?key|"
    r"private_key|access_key|secret_key|credentials?|cookie|set_cookie|session_id|signature|"
    r"otp|pin)$"
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)  # the same few keys come back on every request
def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret, e.g. ``X-Api-Key`` or ``db_password``."""
    words = _SEPARATORS.sub("_", _CAMEL.sub(r"\1_\2", key).lower()).strip("_")
    return _SECRET_KEY.search(words) is not None


Span = Callable[[re.Match[str]], tuple[int, int] | None]


def _whole(match: re.Match[str]) -> tuple[int, int]:
    return match.span()


def _group(match: re.Match[str]) -> tuple[int, int]:
    return match.span(1)


# Values that are already masked, empty or a reference rather than a secret.
_NOT_A_VALUE = re.compile(
    r"(?i)(?:\[masked|\[redacted|\*+$|\$\{|(?-i:\$[A-Z_][A-Z0-9_]*$)|<[^>]*>$|%\(|(?:bearer|basic)\b|"
    r"(?:null|none|nil|true|false|undefined|required|optional|string)$)")


def is_placeholder(value: str) -> bool:
    """True for what stands in for a secret rather than being one: ``null``, ``***``,
    ``<your-token>``, ``${TOKEN}``, ``$TOKEN``, an already masked value."""
    return not value.strip() or _NOT_A_VALUE.match(value.strip()) is not None


# A bare value that is code, not a secret: ``token = self._codec.encode(…)``.
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*+(?:\.[A-Za-z_]\w*+)++")


def _pair_value(match: re.Match[str]) -> tuple[int, int] | None:
    """The value of ``key=value`` / ``"key": "value"`` when the key names a secret."""
    key = match.group("key")
    if not is_secret_key(key):
        return None
    group = next(g for g in ("dq", "sq", "bare") if match.group(g) is not None)
    value = match.group(group)
    if is_placeholder(value):
        return None
    if group == "bare" and (len(value) < 4 or value == key or _DOTTED_NAME.fullmatch(value)
                            or match.string.startswith("(", match.end())):
        return None
    return match.span(group)


def _sk_key(match: re.Match[str]) -> tuple[int, int] | None:
    """``sk-`` keys have digits or are long; ``sk-learn-is-a-library`` is not one."""
    body = match.group()[3:]
    return match.span() if len(body) >= 32 or any(c.isdigit() for c in body) else None


# The last words a key that names a secret can end with (is_secret_key decides): a
# look-behind on them keeps ordinary ``name = value`` pairs from costing a call each.
_KEY_ENDS = "(?i:" + "|".join(f"(?<={re.escape(word)})" for word in (
    "pass", "passwd", "password", "passphrase", "pwd", "secret", "authorization",
    "authorisation", "token", "auth", "key", "credential", "credentials",
    "cookie", "session_id", "session-id", "sessionid", "signature", "otp", "pin")) + ")"


@dataclass(frozen=True, slots=True)
class CredentialFormat:
    """One credential format: it is looked for only on lines whose lower-case form holds
    one of ``hints`` (anywhere, if ``multiline``); ``span`` picks the part of a match
    that is the secret (or None)."""

    kind: str
    hints: tuple[str, ...]
    pattern: re.Pattern[str]
    span: Span = _whole
    multiline: bool = False


JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}+\.eyJ[A-Za-z0-9_-]{5,}+\."
                 r"[A-Za-z0-9_-]*+")

FORMATS: tuple[CredentialFormat, ...] = (
    CredentialFormat("private_key", ("private key-----",), re.compile(
        r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----.*?(?:-----END [A-Z ]{0,40}PRIVATE KEY-----|\Z)",
        re.DOTALL), multiline=True),
    CredentialFormat("bearer", ("bearer",), re.compile(
        r"\b(?i:bearer)[ \t]++([A-Za-z0-9\-._~+/]++=*+)"), _group),
    CredentialFormat("basic", ("basic",), re.compile(
        r"\b(?i:basic)[ \t]++([A-Za-z0-9+/]{8,}+=*+)"), _group),
    CredentialFormat("jwt", ("eyj",), JWT),
    CredentialFormat("url_password", ("@",), re.compile(
        r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^/\s:@]*+:([^/\s@]++)@"), _group),
    CredentialFormat("aws_access_key", ("akia", "asia", "abia", "acca"), re.compile(
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    CredentialFormat("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
                     re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}+|github_pat_[A-Za-z0-9_]{22,}+)")),
    CredentialFormat("gitlab_token", ("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}+")),
    CredentialFormat("slack_token", ("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}+")),
    CredentialFormat("stripe_key", ("k_live_", "k_test_"), re.compile(
        r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}+")),
    CredentialFormat("api_key", ("sk-",), re.compile(
        r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}+"), _sk_key),
    CredentialFormat("google_api_key", ("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    CredentialFormat("npm_token", ("npm_",), re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    CredentialFormat("pypi_token", ("pypi-",), re.compile(
        r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}+")),
    CredentialFormat("credential_pair", (
        "pass", "pwd", "secret", "token", "auth", "key", "credential", "cookie", "session",
        "signature", "otp", "pin"), re.compile(
        r"(?<![\w.-])(?P<key>[A-Za-z_][\w.-]{0,63}+)" + _KEY_ENDS + r"[\"']?[ \t]*+[:=][ \t]*+"
        r"(?:\"(?P<dq>[^\"\\\n]{1,512}+)\"|'(?P<sq>[^'\\\n]{1,512}+)'"
        r"|(?P<bare>[^\s\"',;&<>(){}\[\]]{1,512}+))"), _pair_value),
)

_HINTS = tuple(dict.fromkeys(h for f in FORMATS for h in f.hints))
_ANY_HINT = re.compile("|".join(re.escape(h) for h in _HINTS))
_SHORT = 1024  # below this one regex finds the hints faster than a search per hint


def redact_formats(text: str, marker: Callable[[str], str]) -> tuple[str, list[str]]:
    """``text`` with every well-known credential replaced by ``marker(kind)``, and the
    kind of each replacement, in order of the table."""
    lowered = text.lower()
    if len(text) < _SHORT:
        if _ANY_HINT.search(lowered) is None:  # the common case: one scan, no copy
            return text, []
        found = set(_ANY_HINT.findall(lowered))
    else:
        found = {hint for hint in _HINTS if hint in lowered}
    kinds: list[str] = []
    for form in FORMATS:
        hints = [hint for hint in form.hints if hint in found]
        if not hints:
            continue
        before = len(kinds)
        if form.multiline or len(lowered) != len(text):  # lower() may change lengths
            windows = [(0, len(text))]
        else:
            windows = _lines_holding(lowered, hints)
        text = _replace(text, form, marker(form.kind), kinds, windows)
        if len(kinds) != before:
            lowered = text.lower()
    return text, kinds


def _lines_holding(lowered: str, hints: list[str]) -> list[tuple[int, int]]:
    """The lines of the text that hold a hint (a single-line format can only match there),
    as sorted, distinct ``(start, end)`` spans."""
    lines: set[tuple[int, int]] = set()
    for hint in hints:
        at = lowered.find(hint)
        while at != -1:
            end = lowered.find("\n", at)
            end = len(lowered) if end == -1 else end
            lines.add((lowered.rfind("\n", 0, at) + 1, end))
            at = lowered.find(hint, end)
    return sorted(lines)


def _replace(text: str, form: CredentialFormat, mark: str, kinds: list[str],
             windows: list[tuple[int, int]]) -> str:
    pieces: list[str] = []
    done = 0
    for start, end in windows:
        for match in form.pattern.finditer(text, start, end):
            span = form.span(match)
            if span is None or span[0] < done:
                continue
            pieces += (text[done:span[0]], mark)
            done = span[1]
            kinds.append(form.kind)
    return "".join(pieces) + text[done:] if pieces else text
