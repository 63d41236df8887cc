"""Masking secrets out of anything that goes into an audit event.

Two rules, applied recursively to mappings, lists and strings:

- the value of a key that names a secret (``password``, ``token``,
  ``secret``, ``authorization``, ``api_key``, ``private_key``, ``cookie``,
  ``credential``…, in any case and with ``-``/``_`` separators) becomes
  ``"[masked]"``, whatever it was;
- inside every other string, well-known credential formats are replaced by
  ``[masked:<kind>]``: bearer/basic authorization values, JWTs, PEM private
  keys, passwords in URLs, AWS access key ids, GitHub, GitLab, Slack,
  Stripe, OpenAI/Anthropic-style ``sk-`` keys, Google API keys, npm and PyPI
  tokens, and ``password=…`` pairs whose key names a secret.

Both rules come from :mod:`proctor.credentials.formats`, the one table the
gateway's output guard redacts with too.

Masking happens before an event exists: :func:`mask` runs on every free-form
part of an event when it is built, so neither the hash chain nor an export
ever holds the secret.

>>> mask({"user": "alice", "api_key": "k-123", "note": "Bearer abc.def"})
{'user': 'alice', 'api_key': '[masked]', 'note': 'Bearer [masked:bearer]'}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from proctor.credentials.formats import is_secret_key, redact_formats

__all__ = ["MASK", "is_secret_key", "mask", "mask_label", "mask_labels", "mask_text"]

MASK = "[masked]"

# Labels found clean (see mask_label): never one that held a credential, never an argument.
_CLEAN: dict[str, None] = {}
_CLEAN_MOST = 4096
_CLEAN_LONGEST = 512


@functools.lru_cache(maxsize=64)
def _marker(kind: str) -> str:
    return f"[masked:{kind}]"


def mask_text(text: str) -> str:
    """``text`` with every well-known credential format replaced by ``[masked:<kind>]``."""
    return redact_formats(text, _marker)[0]


def mask_label(text: str) -> str:
    """:func:`mask_text` for a label that comes back call after call (an event's target,
    a policy's reason, a task's purpose): one found clean is remembered, so the next
    time it costs a look-up. Not for arguments: they are masked every time."""
    if text in _CLEAN:
        return text
    masked = mask_text(text)
    if masked == text and len(text) <= _CLEAN_LONGEST:
        if len(_CLEAN) >= _CLEAN_MOST:
            _CLEAN.clear()
        _CLEAN[text] = None
    return masked


def mask(value: Any) -> Any:
    """A copy of ``value`` with secrets masked (mappings, lists, tuples and strings)."""
    kind = type(value)
    if kind is int or kind is bool or value is None:  # the frequent leaves first
        return value
    if kind is str or isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return _masked_mapping(value, mask)
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def mask_labels(value: Any) -> Any:
    """:func:`mask` for a value made of labels that come back call after call (the
    argument names a grant constrains): the same copy, its strings masked with
    :func:`mask_label`. Not for arguments."""
    kind = type(value)
    if kind is str:
        return mask_label(value)
    if kind is list:
        return [mask_labels(v) for v in value]
    if kind is dict:
        return _masked_mapping(value, mask_labels)
    return mask(value)


def _masked_mapping(value: Mapping[Any, Any], inner: Callable[[Any], Any]) -> dict[str, Any]:
    """A mapping's copy, keys as text: the value of a secret-named key masked whole (unless
    empty), every other value through ``inner``."""
    masked = {}
    for key, item in value.items():
        name = key if type(key) is str else str(key)
        secret = is_secret_key(name) and item is not None and item != ""
        masked[name] = MASK if secret else inner(item)
    return masked
