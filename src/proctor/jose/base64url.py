"""Base64url without padding (RFC 7515 §2, RFC 4648 §5): how every JOSE part is written.

Decoding is strict, as joserfc's is: the URL-safe alphabet only (no ``+``, ``/``,
``=`` or whitespace), no length that no encoding has, and the unused bits of
the last character zero. So each byte string has exactly one encoding, and a
token, a key or a signature cannot be spelled a second way that reads the same.

>>> b64url_encode(b"\\xfb\\xff")
'-_8'
>>> b64url_decode("-_8")
b'\\xfb\\xff'
>>> b64url_decode("-_9")
Traceback (most recent call last):
ValueError: not base64url: the last character has bits set that encode nothing
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["b64url_decode", "b64url_encode"]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# as _TO_STANDARD, and the standard alphabet's own ``+``, ``/`` and ``=`` to a character
# no base64 has (``!``)
_TO_STRICT = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", b"", b"==", b"=")
# The last character of 4n+2 characters carries 2 bits of data (4 unused), of 4n+3
# characters 4 bits (2 unused): these are the characters whose unused bits are zero.
_CANONICAL_LAST = {2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}


def b64url_encode(data: bytes) -> str:
    """``data`` in base64url, without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """The bytes ``text`` encodes; :class:`ValueError` unless it is canonical base64url."""
    # Every proof of possession decodes two parts: one translation that also turns the
    # characters base64url has not (``+``, ``/``, ``=``) into one ``binascii``'s strict
    # mode refuses, as it refuses whitespace and anything else. Whatever it refuses is
    # read again below, for the message that says why.
    if isinstance(text, str) and text.isascii():
        raw = text.encode("ascii")
        tail = len(raw) & 3
        if tail != 1 and (not tail or raw[-1] in _CANONICAL_LAST[tail]):
            try:
                return binascii.a2b_base64(raw.translate(_TO_STRICT) + _PADDING[tail],
                                           strict_mode=True)
            except binascii.Error:
                pass
    return _decode_or_say_why(text)


def _decode_or_say_why(text: str | bytes) -> bytes:
    try:
        raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError:
        raise ValueError("not base64url: a character outside the URL-safe alphabet") from None
    if raw.translate(None, _ALPHABET):
        raise ValueError("not base64url: a character outside the URL-safe alphabet")
    tail = len(raw) % 4
    if tail == 1:
        raise ValueError("not base64url: no encoding has this length")
    if tail and raw[-1] not in _CANONICAL_LAST[tail]:
        raise ValueError("not base64url: the last character has bits set that encode nothing")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + b"=" * (-len(raw) % 4),
                                   strict_mode=True)
    except binascii.Error as exc:  # not expected after the checks above
        raise ValueError(f"not base64url: {exc}") from None
