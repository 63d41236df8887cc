"""Base64url as JOSE writes it: no padding, and one spelling per byte string."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.jose import b64url_decode, b64url_encode


@pytest.mark.parametrize(("data", "text"), [
    (b"", ""), (b"f", "Zg"), (b"fo", "Zm8"), (b"foo", "Zm9v"), (b"foob", "Zm9vYg"),
    (b"\xfb\xff", "-_8"), (b"\xff\xff\xfe", "___-"),
])
def test_known_values_encode_without_padding_and_decode_back(data: bytes, text: str) -> None:
    assert b64url_encode(data) == text
    assert b64url_decode(text) == data
    assert b64url_decode(text.encode("ascii")) == data


@given(st.binary(max_size=200))
def test_every_byte_string_round_trips_and_matches_the_standard_library(data: bytes) -> None:
    text = b64url_encode(data)
    assert b64url_decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
               max_size=40))
def test_whatever_decodes_has_exactly_that_one_spelling(text: str) -> None:
    try:
        data = b64url_decode(text)
    except ValueError:
        return
    assert b64url_encode(data) == text


@pytest.mark.parametrize("text", [
    "Zg==",         # padding
    "Zm8=",
    "Zm9v\n",       # whitespace, anywhere
    " Zm9v",
    "Zm 9v",
    "+_8",          # the standard alphabet's characters
    "-/8",
    "Zm9vY",        # 4n+1 characters: no encoding has that length
    "Zh",           # 4 unused bits set in the last character (Zg is b"f")
    "Zm9",          # 2 unused bits set (Zm8 is b"fo")
    "Zm9v\u00e9",   # not ASCII
    "Zm9v\x00",
])
def test_anything_but_canonical_unpadded_base64url_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not base64url"):
        b64url_decode(text)
