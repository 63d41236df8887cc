"""The agent's side of an upstream connection's relay in the tests: what a call was
sent, in order, behind a relay board whose output guard lets everything through."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types

from proctor.gateway.relay import Relay, RelayBoard


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
