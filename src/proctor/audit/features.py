"""What an event keeps of a call's arguments for behaviour baselines: the destination
domains (URL hosts, e-mail domains) and the whole-number value of each numeric
argument. Never the values of strings themselves, so no recipient, path or secret.

>>> argument_features({"to": "Ann@Example.COM", "url": "https://api.x.io/v1", "amount": 12.5,
...                    "note": "hi", "ok": True})
{'domains': ['api.x.io', 'example.com'], 'numbers': {'amount': 13}}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["argument_features"]

_MAX_DOMAINS = 8
_MAX_NUMBERS = 16
_EMAIL = re.compile(r"^[^@\s]{1,64}@([A-Za-z0-9.-]{1,253})$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


def _domain(text: str) -> str | None:
    text = text.strip()
    if len(text) > 2048:
        return None
    match = _EMAIL.match(text)
    if match is not None:
        host: str | None = match.group(1)
    elif "://" in text:
        try:
            host = urlsplit(text).hostname
        except ValueError:
            return None
    else:
        return None
    host = (host or "").lower().rstrip(".")
    return host if _DOMAIN.match(host) else None


def argument_features(args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The domains and numbers of the top-level ``args`` (empty when there are none)."""
    domains: set[str] = set()
    numbers: dict[str, int] = {}
    for name, value in (args or {}).items():
        if not isinstance(name, str):
            continue
        values = value if isinstance(value, list) else [value]
        for item in values[:32]:
            if isinstance(item, str):
                found = _domain(item)
                if found is not None and len(domains) < _MAX_DOMAINS:
                    domains.add(found)
        if isinstance(value, bool) or len(numbers) >= _MAX_NUMBERS or len(name) > 64:
            continue
        if isinstance(value, int):
            numbers[name] = value
        elif isinstance(value, float) and math.isfinite(value):
            numbers[name] = math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)
    features: dict[str, Any] = {}
    if domains:
        features["domains"] = sorted(domains)
    if numbers:
        features["numbers"] = numbers
    return features
