"""A stdio upstream's stderr reaches the gateway's error log line by line, redacted
(proctor.gateway.stderr): cut into bounded lines whatever the server writes, its
injected secrets taken out, the server dying or flooding a log that does not drain.
Through the gateway with the real output guard: tests/e2e/test_gateway_oversight.py."""

from __future__ import annotations

import json
import os
import secrets
import sys
from contextlib import suppress
from pathlib import Path

import anyio
import pytest

from proctor.errors import GatewayError
from proctor.gateway import UpstreamConfig
from proctor.gateway.stderr import MAX_LINE_BYTES, StderrLines, StderrRedaction, cut
from proctor.gateway.upstream import UpstreamConnection
from tests.gateway.conftest import ROOT, WAIT

pytestmark = pytest.mark.anyio

STDERR_UPSTREAM = (sys.executable, "-m", "tests.gateway.stderr_upstream")
KNOWN = "[REDACTED:known_secret]"


def _texts(lines: StderrLines, *chunks: bytes) -> list[tuple[str, bool]]:
    return [(line.text, line.is_cut) for chunk in chunks for line in lines.feed(chunk)]


def test_lines_are_cut_at_newlines_whatever_the_writes_and_the_last_one_at_the_end() -> None:
    lines = StderrLines(max_line=16)
    assert _texts(lines, b"one tw", b"o\nthr", b"ee\n\xff\xfe ok\nlast") == [
        ("one two", False), ("three", False), ("\ufffd\ufffd ok", False)]
    assert [(line.text, line.is_cut) for line in lines.end()] == [("last", False)]
    assert lines.end() == []


def test_a_line_over_the_cap_is_cut_and_its_rest_discarded_up_to_its_newline() -> None:
    lines = StderrLines(max_line=8)
    assert _texts(lines, b"abcd ef", b"ghijk", b"lmnop", b"q\nnext\n") == [
        ("abcd efg", True), ("next", False)]
    assert lines.end() == []


def test_a_cut_head_loses_the_secret_the_cut_fell_in() -> None:
    token = "tok_" + secrets.token_urlsafe(24)
    redaction = StderrRedaction([token])
    head = f"before {token} {'word ' * 10}{token[:10]}"  # the cap fell inside the second
    written = cut(redaction.line(head), redaction.margin)
    assert written.startswith(f"before {KNOWN} word ")
    assert written.endswith(f"word [cut: line over {MAX_LINE_BYTES} bytes]")
    assert token[:4] not in written
    spaced = "pass word " + secrets.token_hex(4)  # a secret with spaces in it
    head = f"x {spaced[:12]}"
    written = cut(StderrRedaction([spaced]).line(head), StderrRedaction([spaced]).margin)
    assert spaced[:5] not in written


def test_a_cut_head_loses_a_spaced_secret_in_its_longest_form() -> None:
    # Go's JSON writes `&` as `\u0026`: longer than the percent-encoding the cut's margin
    # was, so the cut kept the secret's words before the last space within the margin
    spaced = "open sesame " + "&" * 12 + " " + secrets.token_hex(4)
    go = json.dumps(spaced).replace("&", "\\u0026")[1:-1]
    redaction = StderrRedaction([spaced])
    written = cut(redaction.line(f"x {go[:-2]}"), redaction.margin)
    assert "open" not in written and written.endswith(f"[cut: line over {MAX_LINE_BYTES} bytes]")


def test_a_secret_is_taken_out_also_json_escaped() -> None:
    token = 'tok"' + secrets.token_urlsafe(12)
    line = StderrRedaction([token]).line(f'{{"token": "{token[:3]}\\"{token[4:]}"}} {token}')
    assert token[4:] not in line and line.count(KNOWN) == 2


def _connection(token: str, errlog: object) -> UpstreamConnection:
    return UpstreamConnection(
        UpstreamConfig(name="up", command=STDERR_UPSTREAM, cwd=str(ROOT), pin="off"),
        env={"UPSTREAM_TOKEN": token}, call_timeout=WAIT, errlog=errlog,  # type: ignore[arg-type]
        stderr=StderrRedaction([token]))


async def test_an_upstream_dying_mid_line_has_its_last_line_redacted(tmp_path: Path) -> None:
    token = "tok_" + secrets.token_urlsafe(24)
    log = tmp_path / "gateway.log"
    with log.open("w", encoding="utf-8") as errlog:
        connection = _connection(token, errlog)
        async with anyio.create_task_group() as tasks:
            with anyio.fail_after(WAIT):
                await tasks.start(connection.serve)
            with anyio.fail_after(WAIT), pytest.raises(GatewayError) as died:
                await connection.call_tool("die", {})
            assert died.value.code == "upstream_unavailable"
            connection.close()
    written = log.read_text(encoding="utf-8")
    assert token not in written
    assert f"dying with {KNOWN}" in written.splitlines()
    assert f"split {KNOWN} done" in written.splitlines()


async def test_a_flood_into_a_log_that_does_not_drain_holds_neither_the_upstream_nor_the_gateway(
        ) -> None:
    token = "tok_" + secrets.token_urlsafe(24)
    read_end, write_end = os.pipe()
    errlog = os.fdopen(write_end, "w", encoding="utf-8")
    try:
        connection = _connection(token, errlog)
        async with anyio.create_task_group() as tasks:
            with anyio.fail_after(WAIT):
                await tasks.start(connection.serve)
                # some 4 MB of stderr, far past a pipe's buffer: nothing reads the log
                result = await connection.call_tool("flood", {"lines": 120_000})
                assert result.content[0].model_dump()["text"] == "flooded"
                again = await connection.call_tool("echo", {"text": "still here"})
                assert again.content[0].model_dump()["text"] == "still here"
            connection.close()
        with anyio.fail_after(WAIT):
            await connection.closed.wait()
    finally:
        os.close(read_end)  # the blocked write fails now, in its thread
        with suppress(OSError):  # what the log still buffers is lost
            errlog.close()
