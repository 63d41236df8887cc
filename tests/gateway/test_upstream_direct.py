"""A plain ``tools/call`` to a stdio upstream goes around the SDK's ``ClientSession``
(proctor.gateway.pipes): its answers are the session's answers for the same calls,
and whatever a broken or hostile server writes is a specific error, never a crash
nor a wait until the call's timeout."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from proctor.errors import GatewayError
from proctor.gateway import UpstreamConfig
from proctor.gateway.upstream import UpstreamConnection
from tests.gateway.conftest import WAIT
from tests.gateway.heard import Heard, no_guard, sdk_path, steps_heard_in_order

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
TEST_UPSTREAM = (sys.executable, str(HERE / "upstream_server.py"))
HOSTILE = (sys.executable, str(HERE / "hostile_upstream.py"))
BENCH_UPSTREAM = (sys.executable, str(HERE.parent.parent / "bench" / "echo_upstream.py"),
                  "--serve-upstream", "stdio")


@asynccontextmanager
async def _connected(command: tuple[str, ...], *, call_timeout: float = WAIT,
                     max_answer_bytes: int = 4 << 20) -> AsyncIterator[UpstreamConnection]:
    connection = UpstreamConnection(UpstreamConfig(name="up", command=command, pin="off"),
                                    call_timeout=call_timeout,
                                    max_answer_bytes=max_answer_bytes)
    async with anyio.create_task_group() as tasks:
        with anyio.fail_after(WAIT):
            await tasks.start(connection.serve)
        try:
            yield connection
        finally:
            connection.close()


async def _both(connection: UpstreamConnection, name: str, arguments: dict[str, Any]
                ) -> tuple[Any, Any]:
    """The direct answer and the SDK session's, each as the result's JSON or the
    error's code and message."""
    answers: list[Any] = []
    for direct in (True, False):
        try:
            with anyio.fail_after(WAIT), nullcontext() if direct else sdk_path(connection):
                result = await connection.call_tool(name, arguments)
            answers.append(result.model_dump(by_alias=True, mode="json", exclude_none=True))
        except GatewayError as exc:
            answers.append(("gateway", exc.code))
        except MCPError as exc:
            answers.append(("rpc", exc.code, exc.message))
    return answers[0], answers[1]


@pytest.mark.parametrize(("command", "calls"), [
    (TEST_UPSTREAM, [("echo", {"text": "héllo \u2028 \"quoted\"", "count": 3}),
                     ("env_digest", {"name": "PATH"}), ("nested", {"depth": 5}),
                     ("read_env", {"name": "PATH"}), ("echo", {"text": 3})]),
    (BENCH_UPSTREAM, [("echo", {"text": "hi"}), ("echo", {})]),
    (HOSTILE, [("plain", {}), ("structured", {}), ("tool_error", {}), ("later_fields", {}),
               ("notify_first", {}), ("schema_violation", {}), ("no_structured", {}),
               ("rpc_error", {}), ("wrong_id_then_right", {})]),
], ids=["test-upstream", "bench-upstream", "hostile-upstream"])
async def test_a_direct_call_answers_as_the_sdk_session_answers(
        command: tuple[str, ...], calls: list[tuple[str, dict[str, Any]]]) -> None:
    async with _connected(command) as connection:
        for name, arguments in calls:
            direct, through_sdk = await _both(connection, name, arguments)
            assert direct == through_sdk, name


@pytest.mark.parametrize("tool", ["error_not_object", "result_not_object", "bad_content",
                                  "not_json", "too_deep", "no_jsonrpc", "both", "neither",
                                  "lone_surrogate", "byte_order_mark"])
async def test_an_answer_that_is_not_a_tool_result_is_refused_and_the_connection_serves_on(
        tool: str) -> None:
    async with _connected(HOSTILE) as connection:
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as refused:
            await connection.call_tool(tool, {})
        assert refused.value.code == "upstream_invalid_result"
        with anyio.fail_after(WAIT):
            result = await connection.call_tool("plain", {})
        assert result.content[0].model_dump()["text"] == "answer of plain"


async def test_a_tool_a_later_listing_drops_is_not_checked_against_its_old_schema() -> None:
    async with _connected(HOSTILE) as connection:
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as refused:
            await connection.call_tool("schema_violation", {})
        assert refused.value.code == "upstream_invalid_result"  # its listed schema applies
        with anyio.fail_after(WAIT):
            await connection.call_tool("retire", {"name": "schema_violation"})
            listed = await connection.list_tools()
        assert "schema_violation" not in {tool.name for tool in listed}
        direct, through_sdk = await _both(connection, "schema_violation", {})
        assert direct == through_sdk  # no schema: the SDK's session finds none either
        assert direct["structuredContent"] == {"n": "three"}


async def test_a_second_answer_to_a_call_is_dropped() -> None:
    async with _connected(HOSTILE) as connection:
        with anyio.fail_after(WAIT):
            first = await connection.call_tool("twice", {})
            after = await connection.call_tool("plain", {})
        assert first.content[0].model_dump()["text"] == "answer of twice"
        assert after.content[0].model_dump()["text"] == "answer of plain"


async def test_a_call_that_times_out_is_cancelled_at_the_upstream(tmp_path: Path) -> None:
    log = tmp_path / "cancelled"
    async with _connected(HOSTILE, call_timeout=0.5) as connection:
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as timed_out:
            await connection.call_tool("hang", {"log": str(log)})
        assert timed_out.value.code == "upstream_timeout"
        with anyio.fail_after(WAIT):
            while not log.exists() or not log.read_text():
                await anyio.sleep(0.01)
        # the direct path's own id, not the SDK session's integer ids
        assert json.loads(log.read_text().splitlines()[0]).startswith("proctor-")
        with anyio.fail_after(WAIT):
            result = await connection.call_tool("plain", {})
        assert not result.is_error


async def test_an_upstream_that_dies_mid_call_fails_the_call_as_unavailable() -> None:
    async with _connected(HOSTILE) as connection:
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as failed:
            await connection.call_tool("crash", {})
        assert failed.value.code == "upstream_unavailable"
        assert not connection.is_open
        with pytest.raises(GatewayError) as closed:
            await connection.call_tool("plain", {})
        assert closed.value.code == "upstream_unavailable"


async def test_calls_in_flight_together_each_get_their_own_answer() -> None:
    async with _connected(TEST_UPSTREAM) as connection:
        answers: dict[int, Any] = {}

        async def call(n: int) -> None:
            result = await connection.call_tool("echo", {"text": f"call {n}", "count": n})
            answers[n] = result.structured_content

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                for n in range(20):
                    tasks.start_soon(call, n)
        assert answers == {n: {"text": f"call {n}", "count": n} for n in range(20)}


@pytest.mark.parametrize("count", [1, 300])
async def test_a_calls_progress_reaches_it_in_order_before_its_answer(count: int) -> None:
    """A call that asks for progress (a real SDK server reporting ``count`` steps right
    before it answers): every report is relayed in line order before the answer is
    taken, with no timing assumption (the callback hops to a thread for each); a
    report under a token the call did not give is dropped."""
    async with _connected(TEST_UPSTREAM) as connection:
        pipes = connection._pipes
        assert pipes is not None
        await steps_heard_in_order(connection, count)
        assert next(pipes._ids) == 3  # both calls were written by the pipes


CAP = 1 << 16


async def test_an_answer_over_the_cap_fails_the_call_and_the_connection_as_a_crash() -> None:
    async with _connected(HOSTILE, max_answer_bytes=CAP) as connection:
        with anyio.fail_after(WAIT):
            result = await connection.call_tool("sized", {"bytes": CAP})
        assert len(result.content[0].model_dump()["text"]) > CAP - 100
        with anyio.fail_after(WAIT), pytest.raises(GatewayError) as refused:
            await connection.call_tool("sized", {"bytes": CAP + 1})
        assert refused.value.code == "upstream_result_too_large"
        # the line cut off cannot be resynchronised: closed, the next use reconnects
        assert not connection.is_open
    async with _connected(HOSTILE, max_answer_bytes=CAP) as connection:
        with anyio.fail_after(WAIT), sdk_path(connection):  # the SDK's reads: the same cap
            result = await connection.call_tool("sized", {"bytes": CAP})
        assert not result.is_error
        with anyio.fail_after(WAIT), sdk_path(connection), pytest.raises(GatewayError) as failed:
            await connection.call_tool("sized", {"bytes": CAP + 1})
        assert failed.value.code == "upstream_unavailable"
        assert not connection.is_open


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "sdk"])
async def test_an_answer_that_never_ends_fails_at_the_cap_not_at_its_end(direct: bool) -> None:
    # the server writes 640 MiB on one line: only a read that stops at the cap answers
    # before the call's timeout
    async with _connected(HOSTILE, max_answer_bytes=CAP) as connection:
        with anyio.fail_after(WAIT), nullcontext() if direct else sdk_path(connection), \
                pytest.raises(GatewayError) as refused:
            await connection.call_tool("endless", {})
        assert refused.value.code == ("upstream_result_too_large" if direct
                                      else "upstream_unavailable")
        assert not connection.is_open


async def test_a_call_to_an_http_server_that_logs_is_posted_its_logs_relayed_first() -> None:
    """A server that declares logging logs during a call (the conformance suite's
    tools-call-with-logging, which once lost its third message under load when the
    answer overtook the SDK's relay of it): over HTTP the gateway posts the call and
    relays each log line on its stream before it reads the answer."""
    from tests.conformance.upstream import served_in_thread

    board = no_guard()
    with served_in_thread() as url:
        connection = UpstreamConnection(UpstreamConfig(name="up", url=url, pin="off"),
                                        call_timeout=WAIT, relay=board)
        async with anyio.create_task_group() as tasks:
            with anyio.fail_after(WAIT):
                await tasks.start(connection.serve)
            try:
                assert connection.capabilities is not None
                assert connection.capabilities.logging is not None
                posts = connection._posts
                assert posts is not None
                heard = Heard()
                with board.during(heard, "up"), anyio.fail_after(WAIT):
                    result = await connection.call_tool("test_tool_with_logging", {})
                    lines = list(heard.lines)
                assert result.content
                assert lines == ["Tool execution started", "Tool processing data",
                                 "Tool execution completed"]
                assert next(posts._ids) == 2  # the call was posted by the gateway
            finally:
                connection.close()
