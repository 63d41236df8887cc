"""A proof's payload and parts read the same by the fast readers as by the strict ones.

``verify_proof`` reads a payload shaped as the SDK writes it with one regular
expression, and anything else with the strict JSON reader
(:func:`proctor.jose.decode_json_part`); ``b64url_decode`` decodes with one strict
``binascii`` call and says why through its checks. Generated texts (near the SDK's
shape, then bent: escapes, control characters, repeated or reordered members, other
numbers, spacing, nesting) must give the same value, or the same refusal, both ways.
The seeds are explicit, so every run checks the same texts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from proctor.errors import DocumentError, GrantError
from proctor.grants.proofs import _payload, jwk_thumbprint, make_proof, public_jwk, verify_proof
from proctor.jose import b64url_encode, decode_json_part, sign
from proctor.jose.base64url import _decode_or_say_why, b64url_decode

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
TOKEN = "header.payload.signature"

# strings as the SDK writes them, and the characters that make JSON read them otherwise
_PLAIN = st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=12)
_BENT = st.lists(st.sampled_from(['"', "\\", "\\u0041", "\\ud800", "\\ud83d\\ude00", "\\n", "\n",
                                  "\x00", "\x1f", "\x7f", "é", "\\/", "/", " ", "a"]),
                 max_size=6).map("".join)
_STRINGS = st.one_of(_PLAIN, _BENT, st.builds(str.__add__, _PLAIN, _BENT))
_NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.integers(0, 10**6).map(lambda n: f"0{n}"),  # a leading zero: not JSON
    st.integers(0, 10**6).map(lambda n: f"-0{n}"),
    st.sampled_from(["-0", "00", "01", "-", "1.0", "1e3", "1E3", "-1.5e-3", "true", "false",
                     "null", "NaN", "Infinity", "-Infinity", "+1", "0x10", "1_000", "١٢",
                     '"1796679378"', "[1]", "{}", "9" * 19, "9" * 18, "-" + "9" * 18]),
)
_MEMBERS = ("htm", "htu", "iat", "jti", "ath")


@st.composite
def payload_texts(draw: st.DrawFn) -> str:
    """A payload's JSON text: the SDK's shape, then (most often) bent one way or more."""
    # 0: the SDK's shape, strings and integers; 1: one member's value bent; 2: anything
    mode = draw(st.integers(0, 2))
    odd = draw(st.sampled_from(_MEMBERS))
    members: list[tuple[str, str]] = []
    for name in _MEMBERS:
        if name == "ath" and draw(st.booleans()):
            continue
        bent = mode == 2 or (mode == 1 and name == odd)
        if name == "iat":
            value = draw(_NUMBERS if bent else st.integers(-(10**20), 10**20).map(str))
        elif not bent:
            value = '"' + draw(_PLAIN) + '"'
        else:
            value = '"' + draw(_STRINGS) + '"' if draw(st.integers(0, 9)) else draw(_NUMBERS)
        members.append((name, value))
    bend = draw(st.sets(st.sampled_from(["repeat", "order", "extra", "drop", "spaces", "nest",
                                         "trail", "bom", "array", "rename"]), max_size=3)
                ) if mode == 2 else set()
    if "repeat" in bend:
        members.insert(draw(st.integers(0, len(members))), draw(st.sampled_from(members)))
    if "order" in bend:
        members = draw(st.permutations(members))
    if "extra" in bend:
        members.append((draw(st.sampled_from(["cnf", "nonce", "htm2", "", "HTM"])),
                        draw(st.sampled_from(['"x"', "1", '{"a":1}', "[]"]))))
    if "drop" in bend and members:
        del members[draw(st.integers(0, len(members) - 1))]
    if "rename" in bend and members:
        index = draw(st.integers(0, len(members) - 1))
        members[index] = (draw(st.sampled_from(["ht\\u006d", "htm ", "Htm", "jti"])),
                          members[index][1])
    if "nest" in bend and members:
        index = draw(st.integers(0, len(members) - 1))
        members[index] = (members[index][0], "{" + f'"v":{members[index][1]}' + "}")
    glue = draw(st.sampled_from([" ", "\n", "\t", " \r\n"])) if "spaces" in bend else ""
    text = "{" + ("," + glue).join(f'"{name}":{glue}{value}' for name, value in members) + "}"
    if "array" in bend:
        text = f"[{text}]"
    if "trail" in bend:
        text += draw(st.sampled_from([" ", "x", "}", ",", "\x00", "{}"]))
    if "bom" in bend:
        text = "\ufeff" + text
    return text


def _read(read: Any, part: str | bytes) -> tuple[str, str]:
    """What ``read`` makes of ``part``: the value, exactly (``1`` is not ``True``), or
    the refusal's code."""
    try:
        value = read(part)
    except DocumentError as exc:
        return ("refused", exc.code)
    except ValueError as exc:
        return ("refused", str(exc))
    return ("read", repr(value))


def _strict(part: str) -> object:
    return decode_json_part(part, what="proof payload", max_bytes=4096)


def _encoded(text: str) -> str:
    return b64url_encode(text.encode("utf-8", "surrogatepass"))


@seed(20261207)
@settings(max_examples=1000, deadline=None, database=None)
@given(payload_texts())
def test_a_payload_reads_the_same_fast_as_strictly(text: str) -> None:
    part = _encoded(text)
    assert _read(_payload, part) == _read(_strict, part)


def test_the_generated_payloads_reach_both_readers() -> None:
    # the differential compares something: the SDK's shape (the fast reader), texts the
    # strict reader accepts in another shape, and texts it refuses, each often
    outcomes: dict[str, int] = {"sdk": 0, "other": 0, "refused": 0}

    @seed(7)
    @settings(max_examples=500, deadline=None, database=None)
    @given(payload_texts())
    def count(text: str) -> None:
        from proctor.grants.proofs import _SDK_PAYLOAD

        if _SDK_PAYLOAD.fullmatch(text):
            outcomes["sdk"] += 1
        elif _read(_strict, _encoded(text))[0] == "read":
            outcomes["other"] += 1
        else:
            outcomes["refused"] += 1

    count()
    assert min(outcomes.values()) >= 15, outcomes


_BASE64ISH = st.text(st.sampled_from("AQgwEIMUYcko048BZz9-_+/=. \n\x00é"), max_size=12)


@seed(20261208)
@settings(max_examples=1500, deadline=None, database=None)
@given(st.one_of(_BASE64ISH, st.binary(max_size=9).map(b64url_encode),
                 st.binary(max_size=9).map(lambda raw: b64url_encode(raw) + "=")))
def test_base64url_decodes_the_same_fast_as_when_saying_why(text: str) -> None:
    assert _read(b64url_decode, text) == _read(_decode_or_say_why, text)
    assert _read(b64url_decode, text.encode("utf-8")) == _read(_decode_or_say_why, text)


def _signed(key: ec.EllipticCurvePrivateKey, payload: str) -> str:
    header = _encoded(json.dumps({"typ": "dpop+jwt", "jwk": public_jwk(key), "alg": "ES256"},
                                 separators=(",", ":")))
    signing_input = f"{header}.{_encoded(payload)}"
    return f"{signing_input}.{b64url_encode(sign(key, signing_input.encode('ascii')))}"


@pytest.mark.parametrize(("members", "code"), [
    ('"htm":"tools/call","htu":"git/git_log","iat":{iat},"jti":"0123456789","ath":"{ath}"', "ok"),
    # the same members, read by the strict reader: another order, an escape, a space
    ('"htu":"git/git_log","htm":"tools/call","iat":{iat},"jti":"0123456789","ath":"{ath}"', "ok"),
    ('"htm":"tools/call","htu":"git\\/git_log","iat":{iat},"jti":"0123456789","ath":"{ath}"',
     "ok"),
    ('"htm":"tools/call", "htu":"git/git_log","iat":{iat},"jti":"0123456789","ath":"{ath}"', "ok"),
    # a repeated member is refused, whichever value comes last
    ('"htm":"tools/call","htu":"git/git_log","iat":{iat},"jti":"0123456789","ath":"{ath}",'
     '"htu":"git/git_log"', "proof_invalid"),
    ('"htm":"tools/call","htm":"tools/call","htu":"git/git_log","iat":{iat},"jti":"0123456789",'
     '"ath":"{ath}"', "proof_invalid"),
    # iat an integer, nothing else
    ('"htm":"tools/call","htu":"git/git_log","iat":{iat}.0,"jti":"0123456789","ath":"{ath}"',
     "proof_stale"),
    ('"htm":"tools/call","htu":"git/git_log","iat":"{iat}","jti":"0123456789","ath":"{ath}"',
     "proof_stale"),
    ('"htm":"tools/call","htu":"git/git_log","iat":true,"jti":"0123456789","ath":"{ath}"',
     "proof_stale"),
    # a control character in a string, a lone surrogate
    ('"htm":"tools/call","htu":"git/git_log","iat":{iat},"jti":"01234\n56789","ath":"{ath}"',
     "proof_invalid"),
    ('"htm":"tools/call","htu":"git/git_log","iat":{iat},"jti":"01234\\ud80056789",'
     '"ath":"{ath}"', "proof_invalid"),
    ('"htm":"tools/call","htu":"git/git_log","iat":{iat},"jti":"0123","ath":"{ath}"',
     "proof_invalid"),
])
def test_a_signed_payload_is_read_strictly_whatever_its_shape(members: str, code: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ath = json.loads(json.dumps(_ath()))
    payload = "{" + members.replace("{iat}", str(int(NOW.timestamp()))).replace("{ath}", ath) + "}"
    try:
        verify_proof(_signed(key, payload), token=TOKEN,
                     key_thumbprint=jwk_thumbprint(public_jwk(key)), method="tools/call",
                     target="git/git_log", now=NOW)
    except GrantError as exc:
        assert exc.code == code
    else:
        assert code == "ok"


def _ath() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    made = make_proof(key, TOKEN, method="m", target="t", now=NOW)
    return str(json.loads(b64url_decode(made.split(".")[1]))["ath"])
