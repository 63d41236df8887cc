"""The agent's side of an upstream connection's relay in the tests: what a call was
sent, in order, behind a relay board whose output guard lets everything through; and
a connection's calls on the SDK session's path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import mcp_types as types

from proctor.gateway.relay import Relay, RelayBoard
from proctor.gateway.upstream import UpstreamConnection
from tests.gateway.conftest import WAIT


async def _as_is(model: Any) -> Any:
    return model


async def _no_leak(document: dict[str, Any]) -> None:
    return None


def no_guard() -> RelayBoard:
    """A relay board that redacts nothing and finds no leak."""
    return RelayBoard(_as_is, _no_leak, str)


class Heard(Relay):
    """One call's agent: the log lines it was sent, in order. Each takes a hop to a
    worker thread and back (as the output guard's audit write may), so that a log
    relayed in a task of its own is not done when the call's answer is read."""

    def __init__(self) -> None:
        self.progress_token = None
        self.lines: list[Any] = []

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        await anyio.to_thread.run_sync(lambda: None)
        self.lines.append(params.data)


class Reports:
    """A call's progress callback: the reports it was sent, in order, each after a hop
    to a worker thread and back (as :class:`Heard`'s lines)."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        await anyio.to_thread.run_sync(lambda: None)
        self.reports.append((progress, total, message))


async def steps_heard_in_order(connection: UpstreamConnection, count: int) -> None:
    """Two calls of the tests' upstream's ``steps`` asking for progress: when each
    returns, its callback has heard every step, in order (and not the report under a
    token the call did not give)."""
    for _ in range(2):
        reports = Reports()
        with anyio.fail_after(WAIT):
            result = await connection.call_tool("steps", {"count": count}, progress=reports)
            heard = list(reports.reports)  # as the call returns, before anything else runs
        assert result.content[0].model_dump()["text"] == f"reported {count} steps"
        assert heard == [(float(n), float(count), f"step {n}") for n in range(count)]


@contextmanager
def sdk_path(connection: UpstreamConnection) -> Iterator[None]:
    """The connection's calls, while in this block, through the SDK's session: its
    pipes (or posts) set aside, a call has no direct path to take."""
    pipes, posts = connection._pipes, connection._posts
    connection._pipes = connection._posts = None
    try:
        yield
    finally:
        connection._pipes, connection._posts = pipes, posts
