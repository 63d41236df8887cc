"""A stdio upstream's pipes read and written on the event loop (proctor.gateway.wire):
real servers answer each call through them as through the SDK's own session, many
calls at once included, and what a server writes before it is asked, in chunks of any
size, or after the gateway stops reading, is neither lost nor taken twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from mcp import StdioServerParameters
from mcp.client.stdio import (
    _aclose_all,
    _create_platform_compatible_process,
    _stop_server_process,
)

from proctor.errors import GatewayError
from proctor.gateway import pipes as pipes_module
from proctor.gateway.pipes import UpstreamPipes
from proctor.gateway.stdio import PipeReader
from proctor.gateway.wire import ServerStdin, ServerStdout, check_private_attributes
from tests.gateway.conftest import TIME, WAIT
from tests.gateway.test_upstream_direct import BENCH_UPSTREAM, _both, _connected

pytestmark = pytest.mark.anyio

GIT = [sys.executable, "-m", "mcp_server_git"]


def _repository(path: Path) -> Path:
    """A git repository with one commit, made by git itself."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)
    git("init", "-q", "-b", "main")
    git("config", "user.email", "tester@example.org")
    git("config", "user.name", "Tester")
    (path / "notes.txt").write_text("first line\n")
    git("add", "notes.txt")
    git("commit", "-q", "-m", "the first commit")
    (path / "notes.txt").write_text("first line\nsecond line\n")
    return path


async def test_mcp_server_time_answers_through_the_wire_as_through_the_sdk() -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("convert_time", {"source_timezone": "UTC", "time": "12:00",
                          "target_timezone": "Asia/Tokyo"}),
        ("convert_time", {"source_timezone": "UTC", "time": "25:61",
                          "target_timezone": "Asia/Tokyo"}),  # the tool's own error
        ("get_current_time", {"timezone": "Not/AZone"}),
        ("no_such_tool", {})]
    async with _connected(tuple(TIME)) as connection:
        for name, arguments in calls:
            direct, through_sdk = await _both(connection, name, arguments)
            assert direct == through_sdk, name


async def test_mcp_server_git_answers_through_the_wire_as_through_the_sdk(
        tmp_path: Path) -> None:
    repository = str(_repository(tmp_path))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("git_status", {"repo_path": repository}),
        ("git_diff_unstaged", {"repo_path": repository}),
        ("git_log", {"repo_path": repository, "max_count": 5}),
        ("git_show", {"repo_path": repository, "revision": "HEAD"}),
        ("git_status", {"repo_path": str(tmp_path.parent)})]  # outside: refused
    async with _connected((*GIT, "--repository", repository)) as connection:
        for name, arguments in calls:
            direct, through_sdk = await _both(connection, name, arguments)
            assert direct == through_sdk, name


async def test_many_calls_at_once_each_get_their_own_answer_off_the_wire() -> None:
    texts = [f"call {index} " + "x" * (index * 997) for index in range(40)]
    answers: dict[int, Any] = {}
    async with _connected(BENCH_UPSTREAM) as connection:
        async def call(index: int) -> None:
            result = await connection.call_tool("echo", {"text": texts[index]})
            answers[index] = result.structured_content

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                for index in range(len(texts)):
                    tasks.start_soon(call, index)
    assert answers == {index: {"result": text} for index, text in enumerate(texts)}


async def _process(script: str) -> Any:
    return await anyio.open_process([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _unexpected(error: Exception) -> None:
    raise AssertionError(f"handling a chunk failed: {error!r}")


async def _lines(stdout: ServerStdout) -> list[bytes]:
    return [bytes(line) async for line in stdout.lines()]


async def test_what_a_server_wrote_before_the_stdout_was_taken_comes_first() -> None:
    process = await _process("import sys, time\n"
                             "sys.stdout.write('early one\\nearly two\\npart')\n"
                             "sys.stdout.flush()\n"
                             "line = sys.stdin.readline()\n"
                             "sys.stdout.write(' of three\\n' + line)\n")
    reader = process._process.stdout
    stdout = ServerStdout(process, limit=1 << 16, quick=lambda line: False,
                          on_overflow=lambda line: None, on_failure=_unexpected)
    try:
        with anyio.fail_after(WAIT):
            while len(reader._buffer) < len("early one\nearly two\npart"):
                await asyncio.sleep(0)  # the transport reads what the server wrote
            await stdout.take()
            await ServerStdin(process).send(b"asked\n")
            lines = await _lines(stdout)
        assert lines == [b"early one", b"early two", b"part of three", b"asked"]
    finally:
        stdout.give_back()
        with anyio.CancelScope(shield=True):
            await _stop_server_process(process)
            await _aclose_all(process)


async def test_answers_settled_by_the_callback_keep_their_place_behind_waiting_lines() -> None:
    # a log line before an answer waits for the task: the answer behind it waits too
    process = await _process("import sys\n"
                             "sys.stdout.write('log 1\\nanswer 1\\nanswer 2\\nlog 2\\n"
                             "answer 3\\n')\n")
    settled: list[bytes] = []

    def quick(line: bytes | bytearray) -> bool:
        if line.startswith(b"answer"):
            settled.append(bytes(line))
            return True
        return False

    stdout = ServerStdout(process, limit=1 << 16, quick=quick, on_overflow=lambda line: None,
                          on_failure=_unexpected)
    try:
        with anyio.fail_after(WAIT):
            await stdout.take()
            lines = await _lines(stdout)
        # every line after the first log waited in order for the task (none was
        # settled ahead of it); lines the task takes are its own to settle
        assert settled == []
        assert lines == [b"log 1", b"answer 1", b"answer 2", b"log 2", b"answer 3"]
    finally:
        stdout.give_back()
        with anyio.CancelScope(shield=True):
            await _stop_server_process(process)
            await _aclose_all(process)


async def test_a_line_over_the_cap_ends_the_reading_with_its_start() -> None:
    process = await _process("import sys\nsys.stdout.write('fine\\n' + 'y' * 5000)\n"
                             "sys.stdout.flush()\nsys.stdin.readline()\n")
    over: list[bytes] = []
    stdout = ServerStdout(process, limit=1000, quick=lambda line: False,
                          on_overflow=lambda line: over.append(bytes(line[:10])),
                          on_failure=_unexpected)
    try:
        with anyio.fail_after(WAIT):
            await stdout.take()
            lines = await _lines(stdout)
        assert lines == [b"fine"]
        assert over == [b"y" * 10]
    finally:
        stdout.give_back()
        with anyio.CancelScope(shield=True):
            await _stop_server_process(process)
            await _aclose_all(process)


async def test_a_write_to_a_server_that_closed_its_stdin_is_a_broken_pipe() -> None:
    process = await _process("import os\nos.close(0)\nprint('closed', flush=True)\n"
                             "import time\ntime.sleep(60)\n")
    stdin = ServerStdin(process)
    try:
        with anyio.fail_after(WAIT):
            said = b""
            while not said.endswith(b"\n"):  # the server has closed its stdin
                said += await process.stdout.receive()
            assert said == b"closed\n"
            with pytest.raises(anyio.BrokenResourceError):
                for _ in range(1000):  # the first write may land before the pipe breaks
                    await stdin.send(b"x" * 65536)
    finally:
        with anyio.CancelScope(shield=True):
            await _stop_server_process(process)
            await _aclose_all(process)


async def test_a_pipe_reader_keeps_a_chunk_nobody_waited_for_and_the_end_for_good() -> None:
    read_end, write_end = os.pipe()
    reader = PipeReader(read_end)
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                scope = anyio.CancelScope()

                async def gives_up() -> None:
                    with scope:
                        await reader.receive()

                tasks.start_soon(gives_up)
                await asyncio.sleep(0)
                scope.cancel()  # the waiting receive is cancelled before anything comes
            os.write(write_end, b"one\n")
            assert await reader.receive() == b"one\n"
            os.write(write_end, b"two\n")
            while reader._chunk is None:  # read by the callback with nobody waiting
                await asyncio.sleep(0)
            os.write(write_end, b"three\n")
            got = await reader.receive()
            while not got.endswith(b"three\n"):
                got += await reader.receive()
            assert got == b"two\nthree\n"
            os.close(write_end)
            for _ in range(2):
                with pytest.raises(anyio.EndOfStream):
                    await reader.receive()
    finally:
        await reader.aclose()


async def test_an_error_handling_a_chunk_ends_the_reading_and_is_handed_on() -> None:
    # before: it went to the loop's exception handler, the chunk's later lines were lost
    # and the reading never ended (every call waiting on the server, forever)
    process = await _process("import sys\nsys.stdout.write('one\\ntwo\\nthree\\n')\n"
                             "sys.stdout.flush()\nsys.stdin.readline()\n")
    failures: list[Exception] = []
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))

    settled: list[bytes] = []

    def quick(line: bytes | bytearray) -> bool:
        if line == b"two":
            raise KeyError("a bug in quick")
        settled.append(bytes(line))
        return True

    stdout = ServerStdout(process, limit=1 << 16, quick=quick, on_overflow=lambda line: None,
                          on_failure=failures.append)
    try:
        with anyio.fail_after(WAIT):
            await stdout.take()
            lines = await _lines(stdout)
        assert settled == [b"one"] and lines == []  # nothing after the failure is read
        assert [type(f) for f in failures] == [KeyError]
        assert stdout.failed is failures[0] and stdout.is_over
        assert unhandled == []
    finally:
        loop.set_exception_handler(handler)
        stdout.give_back()
        with anyio.CancelScope(shield=True):
            await _stop_server_process(process)
            await _aclose_all(process)


async def test_a_call_in_flight_when_reading_the_answers_fails_gets_upstream_unavailable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: UpstreamPipes, line: bytes | bytearray) -> bool:
        raise RuntimeError("a bug while an answer is read")

    async with _connected(BENCH_UPSTREAM) as connection:
        monkeypatch.setattr(UpstreamPipes, "_took", broken)
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as failed:
            await connection.call_tool("echo", {"text": "hello"})
    assert failed.value.code == "upstream_unavailable"
    assert "RuntimeError" in str(failed.value)


async def test_a_server_whose_pipes_cannot_be_taken_is_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: the wire's objects were made outside the block that stops the server
    pid_file = tmp_path / "pid"
    script = (f"import os, pathlib, time\npathlib.Path({str(pid_file)!r})"
              ".write_text(str(os.getpid()))\ntime.sleep(600)\n")

    class Refused(ServerStdout):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("asyncio's StreamReader has no _buffer (a changed asyncio)")

    monkeypatch.setattr(pipes_module, "ServerStdout", Refused)
    pipes = UpstreamPipes(StdioServerParameters(command=sys.executable, args=["-c", script]),
                          errlog=sys.stderr)
    with anyio.fail_after(WAIT), pytest.raises(RuntimeError, match="_buffer"):
        async with pipes.open():
            pytest.fail("the pipes opened")
    with anyio.fail_after(WAIT):  # (written before the server sleeps: long since)
        while not pid_file.exists() or not pid_file.read_text():  # pragma: no cover
            await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_the_private_attributes_the_wire_reads_are_as_it_reads_them() -> None:
    # asyncio's and anyio's: a new version that renames or retypes one fails here
    process = await _create_platform_compatible_process(
        command=sys.executable, args=["-c", "import sys\nsys.stdout.write('ab')\n"],
        env=None, errlog=sys.stderr, cwd=None)
    try:
        check_private_attributes(process)
        inner = cast(Any, process)._process
        assert isinstance(inner._transport.get_pipe_transport(1), asyncio.ReadTransport)
        reader = inner.stdout
        with anyio.fail_after(WAIT):
            while not reader._eof:  # the transport fills the buffer, then marks the end
                await asyncio.sleep(0.01)
        assert reader._buffer == bytearray(b"ab")
    finally:
        with anyio.CancelScope(shield=True):
            await _stop_server_process(process)
    with pytest.raises(RuntimeError, match="anyio's Process has no _process"):
        check_private_attributes(cast(Any, object()))


async def test_a_pipe_reader_hands_the_lines_its_quick_takes_on_in_the_callback() -> None:
    # a call's line goes on from the pipe's callback: receive() is not woken for it
    # (one turn of the loop less per call); what quick leaves comes to receive()
    read_end, write_end = os.pipe()
    reader = PipeReader(read_end)
    taken: list[bytes] = []

    def quick(chunk: bytes) -> int:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0 and chunk.startswith(b"call", start):
            taken.append(chunk[start:end])
            start = end + 1
        return start

    reader.quick = quick
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                got: list[bytes] = []

                async def receive() -> None:
                    got.append(await reader.receive())

                tasks.start_soon(receive)
                await asyncio.sleep(0)  # waiting, the pipe watched
                os.write(write_end, b"call 1\ncall 2\n")
                while len(taken) < 2:
                    await asyncio.sleep(0.01)
                assert not got  # both went on in the callback: nothing woke receive()
                os.write(write_end, b"call 3\nlist\ncall 4\n")
            assert taken == [b"call 1", b"call 2", b"call 3"]
            assert got == [b"list\ncall 4\n"]  # the first line it left, and all after
    finally:
        os.close(write_end)
        await reader.aclose()
