"""Masking secrets out of anything that goes into an audit event.

Two rules, applied recursively to mappings, lists and strings:

- the value of a key that names a secret (``password``, ``token``,
  ``secret``, ``authorization``, ``api_key``, ``private_key``, ``cookie``,
  ``credential``…, in any case and with ``-``/``_`` separators) becomes
  ``"[masked]"``, whatever it was;
- inside every other string, well-known credential formats are replaced by
  ``[masked:<kind>]``: bearer/basic authorization values, JWTs, PEM private
  keys, passwords in URLs, AWS access key ids, GitHub, GitLab, Slack,
  Stripe, OpenAI/Anthropic-style ``sk-`` keys and Google API keys.

Masking happens before an event exists: :func:`mask` runs on every free-form
part of an event when it is built, so neither the hash chain nor an export
ever holds the secret.

>>> mask({"user": "alice", "api_key": "k-123", "note": "Bearer abc.def"})
{'user': 'alice', 'api_key': '[masked]', 'note': 'Bearer [masked:bearer]'}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "is_secret_key", "mask", "mask_text"]

MASK = "[masked]"

# Matched against the key's last words, after camelCase became snake_case.
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:pass(?:word|wd|phrase)?|secret|token|auth|authori[sz]ation|api_?key|"
    r"private_key|access_key|credentials?|cookie|set_cookie|session_id|signature|otp|pin)$"
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")

# (kind, hints, pattern): a pattern runs only on text whose lower-case form
# contains one of its hints, which keeps masking cheap on ordinary strings.
# A pattern's group 1, when present, is the part to mask.
_FORMATS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    ("private_key", ("private key-----",), re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
        re.DOTALL)),
    ("bearer", ("bearer",), re.compile(r"\b(?i:bearer)\s+([A-Za-z0-9\-._~+/]+=*)")),
    ("basic", ("basic",), re.compile(r"\b(?i:basic)\s+([A-Za-z0-9+/]{8,}=*)")),
    ("jwt", ("eyj",), re.compile(
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")),
    ("url_password", ("@",), re.compile(
        r"\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@")),
    ("aws_access_key", ("akia", "asia", "abia", "acca"), re.compile(
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), re.compile(
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("gitlab_token", ("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("slack_token", ("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("stripe_key", ("k_live_", "k_test_"), re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("api_key", ("sk-",), re.compile(r"\bsk-(?:[A-Za-z0-9_-]{2,}-)?[A-Za-z0-9_-]{20,}")),
    ("google_api_key", ("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
)


_ANY_HINT = re.compile("|".join(re.escape(h) for _, hints, _ in _FORMATS for h in hints))


@functools.lru_cache(maxsize=4096)  # the same few keys come back on every request
def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret, e.g. ``X-Api-Key`` or ``db_password``."""
    words = _SEPARATORS.sub("_", _CAMEL.sub(r"\1_\2", key).lower()).strip("_")
    return _SECRET_KEY.search(words) is not None


def mask_text(text: str) -> str:
    """``text`` with every well-known credential format replaced by ``[masked:<kind>]``."""
    lowered = text.lower()
    if _ANY_HINT.search(lowered) is None:  # the common case: one scan, no copy
        return text
    found = set(_ANY_HINT.findall(lowered))
    for kind, hints, pattern in _FORMATS:
        if found.isdisjoint(hints):
            continue
        if pattern.groups:
            text = pattern.sub(functools.partial(_replace_group, kind=kind), text)
        else:
            text = pattern.sub(f"[masked:{kind}]", text)
    return text


def _replace_group(match: re.Match[str], kind: str) -> str:
    whole, start = match.group(0), match.start()
    return whole[: match.start(1) - start] + f"[masked:{kind}]" + whole[match.end(1) - start:]


def mask(value: Any) -> Any:
    """A copy of ``value`` with secrets masked (mappings, lists, tuples and strings)."""
    kind = type(value)
    if kind is int or kind is bool or value is None:  # the frequent leaves first
        return value
    if kind is str or isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        masked = {}
        for key, item in value.items():
            name = key if type(key) is str else str(key)
            secret = is_secret_key(name) and item is not None and item != ""
            masked[name] = MASK if secret else mask(item)
        return masked
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value
