"""A line read for a call names that call: once it has ended, the line is that call's
or nobody's, never the next call's that happens to be alone in flight on the upstream."""

from __future__ import annotations

import asyncio
import contextvars

import mcp_types as types
import pytest

from tests.gateway.heard import Heard, no_guard

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # a task started in a given context: asyncio's create_task(context=)


async def test_a_line_read_for_a_call_that_ended_reaches_no_other_call() -> None:
    board = no_guard()
    logging = board.logging_for("up")
    ended, other = Heard(), Heard()
    with board.during(ended, "up"):
        # what reads the upstream for `ended` (an answer stream, a task it started)
        reading = contextvars.copy_context()
    line = types.LoggingMessageNotificationParams(level="error", data="ended's line")
    with board.during(other, "up"):
        late = asyncio.get_running_loop().create_task(logging(line), context=reading)
        await late
        mine = asyncio.get_running_loop().create_task(
            logging(types.LoggingMessageNotificationParams(level="error", data="other's line")))
        await mine
    assert ended.lines == [] and other.lines == ["other's line"]
