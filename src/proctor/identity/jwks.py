"""Reading JWKS documents (RFC 7517 §5) that hold the public keys proctor trusts.

A key set that holds a private or symmetric key is refused outright: trust
configuration has no business holding secrets, and a symmetric key is what
HS256-with-the-public-key confusion needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proctor.documents import read_json
from proctor.errors import ConfigError
from proctor.jose import private_members

__all__ = ["MAX_JWKS_BYTES", "read_jwks", "split_jwks"]

MAX_JWKS_BYTES = 256 * 1024


def read_jwks(path: Path) -> dict[str, Any]:
    """A JWKS document from ``path``, at most 256 KiB."""
    document = read_json(path, what="key set", error=ConfigError, max_bytes=MAX_JWKS_BYTES)
    if not isinstance(document, dict):
        raise ConfigError(f"key set `{path}` is not a JWKS object")
    return document


def split_jwks(document: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """The keys of a JWKS document; raise if any is private or symmetric."""
    keys = document.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{what} has no `keys`")
    out: list[dict[str, Any]] = []
    for key in keys:
        if not isinstance(key, dict):
            raise ConfigError(f"{what} has a key that is not a JSON object")
        if key.get("kty") == "oct" or private_members(key):
            raise ConfigError(f"{what} holds a private or symmetric key; "
                              "trust configuration takes public keys only")
        out.append(dict(key))
    return out
