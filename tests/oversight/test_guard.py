"""The output guard on tool results: known secrets, proctor grants, formats, entropy."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from proctor.clock import FrozenClock
from proctor.errors import GuardError
from proctor.grants import GrantScope
from proctor.oversight import MAX_DEPTH, Finding, OutputGuard
from tests.grants.conftest import CODER, ISSUER, Setup, make_setup

INJECTED = "crm-Zq8r2Kx9Lm4Tn7Pv"


def text_result(text: str) -> dict[str, Any]:
    """An MCP tool result as JSON, with one text block."""
    return {"content": [{"type": "text", "text": text}], "isError": False}


def test_an_injected_secret_is_redacted_wherever_it_appears() -> None:
    guard = OutputGuard(known_secrets=[INJECTED])
    result = guard.scan({
        "content": [{"type": "text", "text": f"connected with {INJECTED}, ok"}],
        "structuredContent": {"echo": [INJECTED, "fine"], "nested": {"x": f"<{INJECTED}>"}},
    })
    assert result.value == {
        "content": [{"type": "text", "text": "connected with [REDACTED:known_secret], ok"}],
        "structuredContent": {"echo": ["[REDACTED:known_secret]", "fine"],
                              "nested": {"x": "<[REDACTED:known_secret]>"}},
    }
    assert result.findings == (Finding("known_secret", "/content/0/text"),
                               Finding("known_secret", "/structuredContent/echo/0"),
                               Finding("known_secret", "/structuredContent/nested/x"))
    assert INJECTED not in json.dumps(result.value)


@pytest.mark.parametrize("encode", [
    lambda s: json.dumps({"config": {"key": s}}),            # JSON text inside a text block
    lambda s: "https://api.example/x?k=" + quote(s, safe=""),
    lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
])
def test_an_injected_secret_is_redacted_in_its_usual_encodings(encode: Any) -> None:
    secret = 'p@ss/wörd+"quoted"\n2'
    guard = OutputGuard(detect_high_entropy=False)
    guard.add_known_secret(secret)
    result = guard.scan(text_result("value: " + encode(secret)))
    assert [f.kind for f in result.findings] == ["known_secret"]
    assert encode(secret) not in result.value["content"][0]["text"]


_GO_ESCAPES = str.maketrans({"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"})


@pytest.mark.parametrize("encode", [
    lambda s: json.dumps({"key": s}, ensure_ascii=False),        # JavaScript's JSON
    lambda s: json.dumps({"key": s}, ensure_ascii=False).translate(_GO_ESCAPES),  # Go's
    lambda s: json.dumps({"key": s}).replace("/", "\\/"),         # PHP's
    lambda s: "https://api.example/x?k=" + quote(s),             # `/` left as it is
    lambda s: "k=" + quote_plus(s),                               # a form: space as `+`
    lambda s: "k=" + quote(s, safe="!'()*~"),                     # encodeURIComponent
    lambda s: "k=" + re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(s, safe="")),
], ids=["json-native", "json-go", "json-slash", "url-path", "url-form", "url-js",
        "url-lower-hex"])
def test_an_injected_secret_is_redacted_as_other_encoders_write_it(encode: Any) -> None:
    # each was passed on: only Python's own JSON and `quote(safe="")` forms were known
    secret = 'Tr/ck&y<pa$$> "w!th" (spaces)*é'
    guard = OutputGuard(detect_high_entropy=False)
    guard.add_known_secret(secret)
    text = encode(secret)
    assert secret not in text
    result = guard.scan(text_result("value: " + text))
    assert [f.kind for f in result.findings] == ["known_secret"]
    assert text not in result.value["content"][0]["text"]


def test_a_secret_added_later_is_redacted_from_then_on() -> None:
    guard = OutputGuard(detect_high_entropy=False)
    assert guard.scan(f"see {INJECTED}").value == f"see {INJECTED}"
    guard.add_known_secret(INJECTED)
    assert guard.scan(f"see {INJECTED}").value == "see [REDACTED:known_secret]"
    assert INJECTED not in repr(guard)
    with pytest.raises(GuardError):
        guard.add_known_secret("")


def test_a_secret_inside_another_is_redacted_whole() -> None:
    guard = OutputGuard(known_secrets=["abc12345", "xxabc12345yy"], detect_high_entropy=False)
    assert guard.scan("1 xxabc12345yy 2 abc12345").value == (
        "1 [REDACTED:known_secret] 2 [REDACTED:known_secret]")


@pytest.fixture
def grants(tmp_path: Any, clock: FrozenClock) -> Iterator[Setup]:
    yield from make_setup(f"sqlite:///{tmp_path / 'proctor.db'}", clock)


def test_a_proctor_grant_in_a_result_is_redacted_and_handed_back(grants: Setup) -> None:
    task = grants.authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    grant = grants.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    other_key = ECKey.generate_key("P-256", private=True)
    foreign = jwt.encode({"alg": "ES256"}, {"iss": "https://login.example", "sub": "u"},
                         other_key)
    guard = OutputGuard(grant_issuer=ISSUER)
    result = guard.scan(text_result(
        f"env: PROCTOR_GRANT={grant.token}\nAuthorization: Bearer {grant.token}\n"
        f"id_token: {foreign}"))
    text = result.value["content"][0]["text"]
    assert text == ("env: PROCTOR_GRANT=[REDACTED:proctor_grant]\n"
                    "Authorization: Bearer [REDACTED:proctor_grant]\n"
                    "id_token: [REDACTED:jwt]")
    assert result.grant_tokens == (grant.token,)
    assert [f.kind for f in result.findings] == ["proctor_grant", "proctor_grant", "jwt"]
    assert grant.token not in repr(result)
    # the caller verifies what it was handed: this one is a real, live grant
    assert grants.authority.inspect(result.grant_tokens[0]).claims.grant_id == grant.grant_id


def test_without_an_issuer_every_jwt_is_just_a_jwt(grants: Setup) -> None:
    task = grants.authority.start_task(CODER, purpose="p", on_behalf_of="alice@acme.example")
    grant = grants.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    result = OutputGuard().scan(grant.token)
    assert (result.value, result.grant_tokens) == ("[REDACTED:jwt]", ())


def test_values_under_keys_that_name_secrets_are_redacted_whole() -> None:
    result = OutputGuard().scan({"user": "alice", "password": "hunter2", "pin": 1234,
                                 "apiKey": "k", "auth": {"type": "oauth"}, "token": None,
                                 "secret": "", "debug": True})
    assert result.value == {"user": "alice", "password": "[REDACTED:credential_pair]",
                            "pin": "[REDACTED:credential_pair]",
                            "apiKey": "[REDACTED:credential_pair]",
                            "auth": {"type": "oauth"}, "token": None, "secret": "",
                            "debug": True}
    assert {f.path for f in result.findings} == {"/password", "/pin", "/apiKey"}


def test_a_secret_in_a_key_is_redacted_and_never_in_a_path() -> None:
    result = OutputGuard(known_secrets=[INJECTED]).scan({f"k/{INJECTED}": {"v": INJECTED}})
    assert result.value == {"k/[REDACTED:known_secret]": {"v": "[REDACTED:known_secret]"}}
    assert all(INJECTED not in f.path for f in result.findings)
    assert result.findings[-1].path == "/k~1[REDACTED:known_secret]/v"


def test_media_is_searched_for_known_secrets_only() -> None:
    noise = base64.b64encode(random.Random(5).randbytes(300)).decode()
    image = {"type": "image", "data": noise, "mimeType": "image/png"}
    leaked = {"type": "resource", "resource": {
        "uri": "file:///x", "mimeType": "application/octet-stream",
        "blob": base64.b64encode(b"cfg " + INJECTED.encode() + b"\n").decode()}}
    guard = OutputGuard(known_secrets=[INJECTED])
    result = guard.scan({"content": [image, leaked]})
    assert result.value["content"][0] == image
    blob = result.value["content"][1]["resource"]["blob"]
    assert base64.b64decode(blob, validate=True) == b"cfg [REDACTED:known_secret]\n"
    assert [f.path for f in result.findings] == ["/content/1/resource/blob"]


@pytest.mark.parametrize("length", [8, 9, 10, 11, 12, 33])
def test_a_secret_is_found_in_base64_wherever_it_starts_and_whatever_follows(
        length: int) -> None:
    # base64 of a secret inside longer data (`user:secret`, a file) depends on the
    # secret's offset in a 3-byte group and on the bytes around it: its encoding on its
    # own matched only at offset 0, with nothing after it (or a length divisible by 3)
    secret = "".join(random.Random(length).choices(string.ascii_letters, k=length))
    guard = OutputGuard(known_secrets=[secret], detect_high_entropy=False)
    for before in ("", "u", "us", "user:"):
        for after in ("", "@", "@h", "@host"):
            data = f"{before}{secret}{after}".encode()
            for encoded in (base64.b64encode(data).decode(),
                            base64.urlsafe_b64encode(data).decode()):
                result = guard.scan(f"Authorization: Basic {encoded}")
                assert [f.kind for f in result.findings] == ["known_secret"], (before, after)
            media = guard.scan({"mimeType": "image/png",
                                "data": base64.b64encode(b"\x89PNG" + data).decode()})
            assert base64.b64decode(media.value["data"], validate=True) == (
                f"\x89PNG{before}[REDACTED:known_secret]{after}".encode("latin-1"))


@pytest.mark.parametrize("encode", [
    lambda v: v.encode().hex(), lambda v: v.encode().hex().upper(),
    lambda v: "".join(f"&#x{ord(c):x};" for c in v),
    lambda v: "".join(f"&#X{ord(c):X}" for c in v),  # no `;`: browsers read it all the same
    lambda v: "".join(f"&#{ord(c)};" for c in v),
    lambda v: v[:4] + "".join(f"&#{ord(c)};" for c in v[4:7]) + v[7:],  # some characters
], ids=["hex", "HEX", "html-hex", "html-hex-bare", "html-decimal", "html-some"])
def test_an_injected_secret_in_hex_or_character_references_is_redacted(encode: Any) -> None:
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    result = guard.scan({"text": f"<p>id {encode(INJECTED)}&amp;more</p>"})
    assert result.value == {"text": "<p>id [REDACTED:known_secret]&amp;more</p>"}
    assert [f.kind for f in result.findings] == ["known_secret"]


def test_hex_and_character_references_that_are_not_a_secret_are_left_alone() -> None:
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    near = INJECTED[:-1] + "x"
    for text in ("fish &amp; chips &#x41;&#66;&#0;&#99999999; &lt;b&gt; & &# &#x;",
                 near.encode().hex(), "".join(f"&#{ord(c)};" for c in near),
                 "deadbeef" * 8):
        result = guard.scan(text)
        assert (result.value, result.findings) == (text, ()), text


def test_a_secret_split_across_adjacent_text_items_is_redacted_in_each() -> None:
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    content = [{"type": "text", "text": f"key: {INJECTED[:6]}"},
               {"type": "text", "text": INJECTED[6:12]},
               {"type": "text", "text": f"{INJECTED[12:]} (end)"},
               {"type": "image", "data": "", "mimeType": "image/png"},
               {"type": "text", "text": INJECTED[:3]}]
    result = guard.scan({"content": content, "lines": [INJECTED[:9], INJECTED[9:] + "!"]})
    mark = "[REDACTED:known_secret]"
    assert [c.get("text") for c in result.value["content"]] == [
        f"key: {mark}", mark, f"{mark} (end)", None, INJECTED[:3]]
    assert result.value["lines"] == [mark, f"{mark}!"]
    assert [f.path for f in result.findings] == ["/content/0", "/lines/0"]
    assert content[0]["text"] == f"key: {INJECTED[:6]}"  # the input is not changed
    # pieces that do not join into the secret, or not next to each other, are left
    apart = [INJECTED[:6], "-", INJECTED[6:], {"type": "text", "text": INJECTED[:6]}, 7,
             {"type": "text", "text": INJECTED[6:]}]
    assert guard.scan(apart).value == apart


def test_many_split_secrets_in_one_list_are_redacted_in_linear_time() -> None:
    # An upstream is given the secret it is injected with, so it can send back a long
    # list holding it split at every boundary: each occurrence was matched against every
    # item (30 000 items: minutes before, with the guard's CPU held; well under a
    # second now). The test asserts the scan ends and redacts every piece.
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    half = len(INJECTED) // 2
    lines = [INJECTED[half:] + " " + INJECTED[:half]] * 30_000
    result = guard.scan({"lines": lines})
    mark = "[REDACTED:known_secret]"
    assert result.value["lines"][0] == f"{INJECTED[half:]} {mark}"
    assert result.value["lines"][1:-1] == [f"{mark} {mark}"] * (len(lines) - 2)
    assert result.value["lines"][-1] == f"{mark} {INJECTED[:half]}"
    assert len(result.findings) == len(lines) - 1


@pytest.mark.parametrize("urlsafe", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_media_unpadded_or_urlsafe_is_searched_as_media_and_written_back_alike(
        urlsafe: bool, padded: bool) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    guard = OutputGuard(known_secrets=[INJECTED])

    def written(data: bytes) -> str:
        text = encode(data).decode()
        return text if padded else text.rstrip("=")

    noise = random.Random(7).randbytes(301)  # its base64 needs padding
    image = {"type": "image", "data": written(noise), "mimeType": "image/png"}
    assert guard.scan(image).value == image  # random bytes are not text to redact
    data = b"\x89PNG\xfb\xff" + INJECTED.encode() + b"\xff" + INJECTED.encode().hex().encode()
    result = guard.scan({**image, "data": written(data)})
    mark = b"[REDACTED:known_secret]"
    assert result.value["data"] == written(b"\x89PNG\xfb\xff" + mark + b"\xff" + mark)
    assert len(result.findings) == 2


def test_media_that_is_not_base64_is_searched_as_text() -> None:
    guard = OutputGuard(known_secrets=[INJECTED])
    result = guard.scan({"mimeType": "text/plain", "blob": f"token={INJECTED}!"})
    assert result.value["blob"] == "token=[REDACTED:known_secret]!"
    assert [f.kind for f in result.findings] == ["known_secret"]



def test_random_looking_strings_are_redacted() -> None:
    aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    result = OutputGuard().scan(f"aws_secret = {aws_secret}\nsession 9Hq2xWv7Lk3pRt8Zm1Ns4Yb6")
    assert result.value == ("aws_secret = [REDACTED:credential_pair]\n"
                            "session [REDACTED:high_entropy]")


def test_most_random_tokens_are_caught() -> None:
    rng = random.Random(2026)  # fixed: the test is exact, not flaky
    alphabet = string.ascii_letters + string.digits
    guard = OutputGuard()
    for length, floor in ((24, 0.85), (32, 0.9), (48, 0.9)):
        tokens = ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(400)]
        caught = sum(guard.scan(f"id {t} ok").value == "id [REDACTED:high_entropy] ok"
                     for t in tokens)
        assert caught / len(tokens) >= floor, (length, caught)


@pytest.mark.parametrize("text", [
    "3f0c2b1e9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e",                        # a git SHA
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "0191b7a8-5c1e-7f3a-9d2b-4e6f8a0c1d3e",                             # a UUID
    "src/proctor/oversight/guard.py:42: OutputGuardRedactsSecretsTests",
    "/usr/lib/python3.11/site-packages/cryptography-42.0.5.dist-info",
    "PytestRemovedIn10Warning: X520OrganizationName is deprecated",
    "2026-11-30T10:00:00.123456+01:00",
    "https://github.com/modelcontextprotocol/python-sdk/pull/1234#issuecomment-2345678",
    "data:image/png is not text", "Internationalization and localization",
])
def test_ordinary_machine_output_is_not_flagged(text: str) -> None:
    assert OutputGuard().scan(text).findings == ()


def test_only_json_values_are_scanned_and_nesting_is_bounded() -> None:
    guard = OutputGuard()
    for value in ({"a": b"bytes"}, {1: "int key"}, [object()]):
        with pytest.raises(GuardError) as failure:
            guard.scan(value)
        assert failure.value.code == "guard_value_unsupported"
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(GuardError) as failure:
        guard.scan(deep)
    assert failure.value.code == "guard_value_too_deep"
    assert guard.scan((1, 2.5, None, True)).value == (1, 2.5, None, True)


def test_a_large_result_is_scanned_whole() -> None:
    line = "commit 3f0c2b1e9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e Author: Alice <alice@acme.example>\n"
    big = line * 1300 + f"token: {INJECTED}\n" + line * 1300  # about 200 KB
    result = OutputGuard().scan(text_result(big))
    assert result.counts() == {"credential_pair": 1}
    assert INJECTED not in result.value["content"][0]["text"]


@pytest.mark.parametrize("hide", [
    # base64 wrapped at 76 columns (MIME), the secret in the middle of a longer payload
    lambda v: "\r\n".join(textwrap.wrap(base64.b64encode(
        b"\x89PNG" * 11 + v.encode() + b";" * 60).decode(), 76)),  # across a break
    lambda v: base64.b64encode(v.encode().hex().encode()).decode(),  # base64 of hex
    lambda v: base64.b64encode(v.encode()).hex(),  # hex of base64
    lambda v: base64.b64encode(base64.b64encode(b"k:" + v.encode())).decode(),
    lambda v: "".join(f"%{b:02X}" for b in base64.b64encode(v.encode())),
    lambda v: "".join(f"%26%23{ord(c)}%3B" for c in v),  # references, percent-encoded
    lambda v: f"{v[:5]}\x00{v[5:]}",  # a NUL
    lambda v: "\u200b".join(v),  # zero-width spaces
    lambda v: "\x1b[0m".join(v[i:i + 3] for i in range(0, len(v), 3)),  # escapes
    # stacked, after a prefix or before a suffix of the run's alphabets (not at its start)
    lambda v: "0x" + base64.b64encode(v.encode()).hex(),
    lambda v: "sha256-" + base64.b64encode(v.encode().hex().encode()).decode(),
    lambda v: "sha256-" + base64.b64encode(b"ab" + v.encode().hex().encode()).decode(),
    lambda v: "abc" + base64.b64encode(v.encode()).hex() + "xyz",
    lambda v: "a" + base64.b64encode(v.encode()).hex(),  # an odd offset
    lambda v: "key_" + base64.b64encode(base64.b64encode(b"k:" + v.encode())).decode(),
    lambda v: "Zz" + base64.b64encode(v.encode().hex().encode()).decode() + "-x_y",
], ids=["mime", "base64-of-hex", "hex-of-base64", "base64-of-base64", "percent-of-base64",
        "references-percent-encoded", "nul", "zero-width", "terminal-escapes",
        "0x-hex-of-base64", "sha256-base64-of-hex", "sha256-base64-of-hex-shifted",
        "hex-of-base64-prefix-suffix", "hex-of-base64-odd", "urlsafe-prefix-base64-of-base64",
        "base64-of-hex-prefix-suffix"])
def test_an_injected_secret_hidden_by_line_breaks_controls_or_stacked_encodings_is_redacted(
        hide: Any) -> None:
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    result = guard.scan({"text": f"before {hide(INJECTED)} after"})
    assert [f.kind for f in result.findings] == ["known_secret"]
    assert result.value["text"].startswith("before ")
    assert result.value["text"].endswith(" after")
    assert "[REDACTED:known_secret]" in result.value["text"]


def test_text_with_controls_and_encodings_that_hold_no_secret_is_left_alone() -> None:
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    near = INJECTED[::-1]
    for text in ("line one\r\nline two\x00\u200b", base64.b64encode(near.encode().hex()
                                                                     .encode()).decode(),
                 "%41%42%43 100% &amp;", "\r\n".join(textwrap.wrap(
                     base64.b64encode(near.encode() * 9).decode(), 76))):
        result = guard.scan(text)
        assert (result.value, result.findings) == (text, ()), text


def test_a_secret_split_across_two_string_values_of_an_object_is_redacted_in_each() -> None:
    guard = OutputGuard(known_secrets=[INJECTED], detect_high_entropy=False)
    mark = "[REDACTED:known_secret]"
    result = guard.scan({"structuredContent": {"head": f"id {INJECTED[:10]}",
                                               "tail": f"{INJECTED[10:]} end", "n": 3}})
    assert result.value == {"structuredContent": {"head": f"id {mark}", "tail": f"{mark} end",
                                                  "n": 3}}
    assert [f.path for f in result.findings] == ["/structuredContent/head"]
    apart = {"head": INJECTED[:10], "n": 3, "tail": INJECTED[10:]}  # not adjacent
    assert guard.scan(apart).value == apart
