"""The chain: canonical JSON, the link hash, the head.

Canonical JSON here is the subset of RFC 8785 (JCS) that audit events use:
object keys sorted by code point, no insignificant whitespace, strings as
UTF-8 (not ``\\u`` escapes, except the control characters JSON requires),
integers only (floats are refused, so no number formatting rules are needed),
``NaN``/``Infinity`` refused.

The chain hash of an event is ``sha256(prev || body)`` where ``prev`` is the
32 raw bytes of the previous event's hash (:data:`GENESIS_HASH`, 32 zero
bytes, before the first event) and ``body`` the event's canonical JSON;
it is stored as 64 lowercase hex digits.

>>> canonical_json({"b": 1, "a": "é"})
b'{"a":"\\xc3\\xa9","b":1}'
>>> chain_hash(GENESIS_HASH, b"{}")[:16]
'fb1634c4e6cd4b1f'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

__all__ = [
    "GENESIS",
    "GENESIS_HASH",
    "ChainHead",
    "canonical_json",
    "chain_hash",
    "check_json_value",
]

GENESIS_HASH = "0" * 64

_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def check_json_value(value: Any) -> None:
    """Refuse what canonical JSON here does not encode: floats and non-JSON types.

    :class:`~proctor.audit.events.AuditEvent` runs it on its free-form
    ``detail``; every other field is typed, so the hot path skips the walk.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("audit JSON object keys must be strings")
            check_json_value(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_json_value(item)
    elif isinstance(value, float):
        raise ValueError("audit events carry no floating-point numbers")
    elif value is not None and not isinstance(value, str | int):
        raise ValueError(f"audit events cannot carry a `{type(value).__name__}`")


def canonical_json(value: Any) -> bytes:
    """``value`` (dicts, lists, strings, integers, booleans, None) as canonical JSON bytes."""
    return _encoder.encode(value).encode("utf-8")


def chain_hash(prev_hash: str, body: bytes) -> str:
    """The hash that links ``body`` to the event whose hash is ``prev_hash``."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


class ChainHead(NamedTuple):
    """The last link: its position (0 before the first event) and its hash."""

    seq: int
    hash: str


GENESIS = ChainHead(0, GENESIS_HASH)
