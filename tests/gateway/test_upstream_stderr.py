"""A stdio upstream's stderr reaches the gateway's error log line by line, redacted
(proctor.gateway.stderr): cut into bounded lines whatever the server writes, its
injected secrets taken out, the server dying or flooding a log that does not drain,
a flood held to the upstream's budget (whole lines dropped unscanned, counted, said).
Through the gateway with the real output guard: tests/e2e/test_gateway_oversight.py."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from proctor.clock import FrozenClock
from proctor.errors import GatewayError
from proctor.gateway import UpstreamConfig
from proctor.gateway.stderr import (
    BUDGET_BURST_BYTES,
    LINE_COST_BYTES,
    MAX_LINE_BYTES,
    StderrBudget,
    StderrLines,
    StderrRedaction,
    UpstreamStderr,
    cut,
)
from proctor.gateway.upstream import UpstreamConnection
from proctor.oversight.guard import OutputGuard
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
    # the cap fell inside the second (the margin is the longest form: hex, twice its length)
    head = f"before {token} {'word ' * 30}{token[:10]}"
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


def _frozen() -> FrozenClock:
    return FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))


def test_the_budget_pays_for_whole_lines_up_to_its_tokens_and_refills_with_time() -> None:
    clock = _frozen()
    budget = StderrBudget(clock, rate=100, burst=300, line_cost=10)
    assert budget.admit(b"a" * 40 + b"\n") == b"a" * 40 + b"\n"  # 51 of 300
    # 249 left: of ten lines of 30 (40 each with their cost) about six, cut at a newline
    head = budget.admit(b"b" * 29 + b"\n" * 1 + (b"c" * 29 + b"\n") * 9)
    assert 0 < len(head) < 300 and head.endswith(b"\n") and len(head) % 30 == 0
    assert budget.admit(b"d\n") == b""  # spent: nothing, not even a short line
    assert budget.admit(b"no newline at all") == b""
    clock.advance(seconds=1)  # 100 more
    assert budget.admit(b"e" * 80 + b"\n") == b"e" * 80 + b"\n"
    clock.advance(seconds=3600)  # never more than the burst at once
    assert budget.admit(b"f" * 400 + b"\n") == b""


def test_dropped_bytes_count_each_line_once_and_the_line_after_them_comes_whole() -> None:
    lines = StderrLines(max_line=8)
    assert _texts(lines, b"kept\nhal") == [("kept", False)]
    assert lines.drop(b"f of it\nsecond\nthi") == 3  # "half of it", "second", "thi…"
    assert lines.drop(b"rd still") == 0  # the third, counted
    assert _texts(lines, b"rd line ends\nnext\n") == [("next", False)]
    assert _texts(lines, b"a cut line, its") == [("a cut li", True)]
    assert lines.drop(b" rest\nthen one\n") == 1  # the cut line was written: "then one"
    assert lines.drop(b"") == 0
    assert _texts(lines, b"whole\n") == [("whole", False)]


class _CountingRedaction(StderrRedaction):
    """The real redaction (the real output guard), counting the lines it scans."""

    def __init__(self, token: str) -> None:
        super().__init__([token], OutputGuard(known_secrets=[token]))
        self.lines = 0
        self.cost = 0

    def line(self, text: str) -> str:
        self.lines += 1
        self.cost += len(text.encode()) + 1 + LINE_COST_BYTES
        return super().line(text)


_NOTICE = re.compile(r"\[(\d+) lines of the upstream's stderr were dropped( unread)?: ")
FLOOD_LINE = b"flood line of the stderr upstream\n"


async def _relay_flood(stderr: UpstreamStderr, first: bytes, floods: int) -> None:
    """``first``, then ``floods`` writes of 1,000 flood lines, into the relay's pipe; the
    pipe ends after them, and the relay with it."""
    fd = stderr.child_end()

    def write() -> None:
        os.write(fd, first)
        for _ in range(floods):  # blocks if the relay stops draining: the test times out
            os.write(fd, FLOOD_LINE * 1000)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(stderr.relay)
        with anyio.fail_after(WAIT):
            await anyio.to_thread.run_sync(write)
        stderr.spawned()  # the pipe's write end closed: the relay reads to its end
        with anyio.fail_after(WAIT):
            await stderr.finish(timeout=WAIT)


async def test_a_flood_costs_the_gateway_its_budget_and_the_drop_is_said_once(
        tmp_path: Path) -> None:
    token = "tok_" + secrets.token_urlsafe(24)
    redaction = _CountingRedaction(token)
    log = tmp_path / "gateway.log"
    with log.open("w", encoding="utf-8") as errlog:
        # the clock stands still: the budget is never refilled while the flood lasts
        stderr = UpstreamStderr(errlog, redaction, clock=_frozen())
        await _relay_flood(stderr, b"starting with token " + token.encode() + b"\n", 200)
    written = log.read_text(encoding="utf-8").splitlines()
    assert token not in "\n".join(written)
    assert f"starting with token {KNOWN}" in written  # a normal line: through, redacted
    # the work done: what the burst pays for (some 1,600 lines), not the 200,000 sent
    assert redaction.cost <= BUDGET_BURST_BYTES + len(FLOOD_LINE) + LINE_COST_BYTES
    assert redaction.lines < 2_000
    notices = [m for m in map(_NOTICE.match, written) if m]
    over = [m for m in notices if m.group(2)]
    # said when the first line was dropped and at the end: not once per dropped chunk
    assert 1 <= len(over) <= 2
    assert over[0].group(0).endswith("dropped unread: ")
    assert "over its budget of 64 KiB a second]" in written[written.index(over[0].string)]
    flood_lines = [line for line in written if line == FLOOD_LINE.decode().strip()]
    dropped = sum(int(m.group(1)) for m in notices)
    assert len(flood_lines) + dropped == 200_000  # every line written or counted, once
    # all but those were dropped unread (not split, queued nor scanned), not for a slow log
    assert sum(int(m.group(1)) for m in over) >= 200_000 - 2_000
    assert len(flood_lines) == redaction.lines - 1
    assert written.index(over[0].string) > written.index(f"starting with token {KNOWN}")
