"""An upstream's log messages during a call reach the agent before the call's answer,
in the order the upstream wrote them, whichever path the call takes (the direct path
takes its answer off the upstream's pipe, while the SDK's session would relay the
messages written before it in tasks of their own)."""

from __future__ import annotations

from typing import Any, cast

import anyio
import mcp_types as types
import pytest

from tests.conftest import sqlite_only
from tests.gateway.conftest import UPSTREAM, WAIT, Deployment
from tests.gateway.in_process import wrapped

pytestmark = pytest.mark.anyio

LINES = 300


def _answer_at(wire: list[types.JSONRPCMessage], text: str) -> int:
    """Where the answer whose first content is ``text`` is on the wire."""
    for at, message in enumerate(wire):
        if isinstance(message, types.JSONRPCResponse):
            content = message.result.get("content") or [{}]
            if content[0].get("text") == text:
                return at
    raise AssertionError(f"no answer `{text}` on the wire")


def _logged(messages: list[types.JSONRPCMessage]) -> list[Any]:
    return [message.params["data"] for message in messages
            if isinstance(message, types.JSONRPCNotification)
            and message.method == "notifications/message" and message.params]


@sqlite_only  # the order of the wrapper's lines is the subject, alike on both backends
@pytest.mark.parametrize("meta", [None, cast(types.RequestParamsMeta, {"trace": "on"})],
                         ids=["direct", "sdk"])
async def test_every_log_line_an_upstream_writes_before_its_answer_reaches_the_agent_first(
        deployment: Deployment, meta: types.RequestParamsMeta | None) -> None:
    # the test upstream does not declare logging; a call with `_meta` is not plain, so it
    # goes through the SDK's server on the agent's side
    wire: list[types.JSONRPCMessage] = []
    async with wrapped(deployment, deployment.grant(), UPSTREAM, server="test",
                       wire=wire) as client:
        for round_ in range(3):
            with anyio.fail_after(WAIT):
                result = await client.call_tool("chatty", {"count": LINES}, meta=meta)
            assert not result.is_error
            # the client sees the answer after the wire recorded it, and all before it
            at = _answer_at(wire, f"logged {LINES} lines")
            before, after = _logged(wire[:at]), _logged(wire[at:])
            in_order = before == [f"line {n}" for n in range(LINES)]
            assert in_order, (f"round {round_}: {len(before)} lines before the answer (the "
                              f"last {before[-1:]}), {len(after)} after it")
            wire.clear()


async def _no_reports(progress: float, total: float | None, message: str | None) -> None:
    return None


@sqlite_only  # the order of the wrapper's lines is the subject, alike on both backends
async def test_every_progress_step_an_upstream_reports_before_its_answer_reaches_the_agent_first(
        deployment: Deployment) -> None:
    # a call that asks for progress goes through the SDK's server on the agent's side, and
    # the pipes' direct path on the upstream's: the agent sees its own token on each
    wire: list[types.JSONRPCMessage] = []
    async with wrapped(deployment, deployment.grant(), UPSTREAM, server="test",
                       wire=wire) as client:
        for round_ in range(3):
            with anyio.fail_after(WAIT):
                result = await client.call_tool("steps", {"count": LINES},
                                                progress_callback=_no_reports)
            assert not result.is_error
            at = _answer_at(wire, f"reported {LINES} steps")
            answer = wire[at]
            assert isinstance(answer, types.JSONRPCResponse)
            before = [message.params for message in wire[:at]
                      if isinstance(message, types.JSONRPCNotification)
                      and message.method == "notifications/progress" and message.params]
            assert {params["progressToken"] for params in before} == {answer.id}
            steps = [params.get("message") for params in before]
            assert steps == [f"step {n}" for n in range(LINES)], (
                f"round {round_}: {len(steps)} steps before the answer (the last {steps[-1:]})")
            wire.clear()
