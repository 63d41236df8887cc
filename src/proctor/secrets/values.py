"""What a secret is: a validated name, a bounded value, and what may be shown of it.

Names are not secret (they appear in gateway configuration, the CLI and the
audit log); values never leave the store except inside a :class:`SecretLease`,
whose ``repr`` leaves the value out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from proctor.credentials import find_random_looking, redact_formats
from proctor.errors import SecretError

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_VALUE_BYTES",
    "SecretInfo",
    "SecretLease",
    "check_name",
    "check_value",
]

MAX_NAME_CHARS = 128
MAX_VALUE_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.-]")


def check_name(name: object) -> str:
    """``name`` if it is 1-128 characters of ``A-Z a-z 0-9 _ . -`` and does not look like a
    credential itself; else ``secret_name_invalid``.

    Names are logged and audited, so a value given as the name by mistake must not
    pass as one; an invalid name is never echoed.

    >>> check_name("github.token")
    'github.token'
    """
    if isinstance(name, str) and _NAME.fullmatch(name):
        _, kinds = redact_formats(name, str)
        if not kinds and next(find_random_looking(name), None) is None:
            return name
        kind = kinds[0] if kinds else "high_entropy"
        raise SecretError("secret_name_invalid",
                          f"invalid secret name: it looks like a credential ({kind}); "
                          "was the value given as the name?")
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"it is {len(name)} characters long (at most {MAX_NAME_CHARS})"
    else:
        position = next(i for i, c in enumerate(name) if not _NAME_CHAR.fullmatch(c))
        problem = f"character {position + 1} is not one of A-Z a-z 0-9 _ . -"
    raise SecretError("secret_name_invalid", f"invalid secret name: {problem}")


def check_value(value: object) -> str:
    """``value`` if it can be stored: a non-empty string of at most 64 KiB (UTF-8) with no
    NUL character (it could not be put in an environment variable)."""
    if not isinstance(value, str):
        raise SecretError("secret_value_invalid", "a secret value must be text")
    if not value:
        raise SecretError("secret_value_invalid", "a secret value cannot be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SecretError("secret_value_invalid", "a secret value must be valid text") from exc
    if size > MAX_VALUE_BYTES:
        raise SecretError("secret_value_invalid",
                          f"a secret value is at most {MAX_VALUE_BYTES} bytes (this one: {size})")
    if "\x00" in value:
        raise SecretError("secret_value_invalid", "a secret value cannot contain a NUL character")
    return value


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown of a stored secret: everything but its value."""

    name: str
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True)
class SecretLease:
    """One use of a secret, as a node (kind ``secret``) of the lease tree.

    ``value`` is left out of ``repr`` and ``str``, so a lease that ends up in a log
    line or a traceback does not carry it.
    """

    lease_id: str
    name: str
    value: str = field(repr=False)
    expires_at: datetime | None = None
