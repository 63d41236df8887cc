"""How a ``prefix`` constraint matches a string: as a path or URL, not as bare text.

A prefix constraint nearly always names a place (``/srv/repos/app``,
``file:///srv/docs/``, ``https://api.example.com``), and the upstream that receives
the value resolves it as one. Plain ``str.startswith`` let through what the
upstream would resolve elsewhere, so a value is allowed only when, in order:

1. it holds no control character (a NUL cuts a C string short; a newline starts a
   header or a log line);
2. no form of it the upstream might read names a parent directory: the value
   itself, each of up to :data:`_DECODINGS` percent-decodings (``%2e%2e``,
   ``%252e%252e``), and their Unicode NFKC forms (the two dot leader U+2025,
   fullwidth full stops and solidus), with ``\\`` read as ``/``: no segment is
   ``..``;
3. it starts with the prefix, **at a boundary**: a prefix that ends in a letter or a
   digit matches the value itself or the value going on with ``/``, so
   ``/srv/repos/app`` allows ``/srv/repos/app/src`` but not ``/srv/repos/app-evil``
   and ``https://api.example.com`` not ``https://api.example.com.evil.example``;
   a prefix that ends in anything else (``/``, ``-``, ``=``) is a plain prefix;
4. its NFKC form passes step 3 as well (a combining mark after the prefix composes
   with its last character under normalization).

A prefix itself must pass steps 1 and 2 (checked when the scope is read), which is
what makes :func:`prefix_covers` sound: a child prefix matched by its parent's, at
a boundary, allows nothing the parent's does not.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

__all__ = ["has_control", "is_clean", "prefix_allows", "prefix_covers"]

_DECODINGS = 3  # percent-decodings looked through: %2e, %252e, %25252e
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def prefix_allows(prefixes: tuple[str, ...], value: str) -> bool:
    """True if ``value`` is clean and lies under one of ``prefixes`` (steps 1 to 4)."""
    if not is_clean(value):
        return False
    if value.isascii():  # its own NFKC form
        return any(_under(p, value) for p in prefixes)
    normal = unicodedata.normalize("NFKC", value)
    return any(_under(p, value) and _under(p, normal) for p in prefixes)


def prefix_covers(parent: tuple[str, ...], child: str) -> bool:
    """True if every value the prefix ``child`` allows, one of ``parent`` allows too."""
    return any(_under(p, child) for p in parent)


def is_clean(value: str) -> bool:
    """True if no form of ``value`` holds a control character or steps up to ``..``."""
    if value.isascii() and ".." not in value and "%" not in value:
        return not has_control(value)  # the common case: nothing to decode or normalize
    forms = [value]
    for _ in range(_DECODINGS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    forms += [unicodedata.normalize("NFKC", form) for form in forms]
    return not any(has_control(form) or _steps_up(form) for form in forms)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a C0 or C1 control character, or DEL."""
    return _CONTROL.search(text) is not None


def _steps_up(text: str) -> bool:
    return ".." in text.replace("\\", "/").split("/")


def _under(prefix: str, value: str) -> bool:
    if not value.startswith(prefix):
        return False
    if len(value) == len(prefix) or not prefix[-1].isalnum():
        return True
    return value[len(prefix)] == "/"
