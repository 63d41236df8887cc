"""A request holds its gateway session from the moment it is bound to it until it is
answered, so the HTTP gateway's idle close never lands under a call (driven step by step,
see ``tests/gateway/in_process.py``).

On SQLite only: a session's hold and the watch's idle check are in memory, alike on
both backends (what the watch reads from the store, and hears by ``NOTIFY`` on
PostgreSQL, is tested on both in ``test_session_revocation.py``)."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from mcp.shared.exceptions import MCPError

from proctor.clock import FrozenClock, SystemClock
from proctor.gateway import GatewaySession
from tests.conftest import sqlite_only
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import (
    IDLE,
    POLL,
    Gate,
    agent,
    echo_through_gate,
    gateway_on,
    session_of,
)

pytestmark = pytest.mark.anyio


@sqlite_only
async def test_an_idle_check_while_a_call_is_bound_and_connecting_leaves_its_session_open(
        deployment: Deployment, tmp_path: Path) -> None:
    grant, bystander_grant = deployment.grant(), deployment.grant()
    clock = FrozenClock(SystemClock().now())
    gate = Gate(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client, agent(
                f"{public}/mcp/plain", bystander_grant, deployment, clock) as bystander:
            await bystander.list_tools()  # its session will sit idle
            idle = session_of(gateway, bystander_grant)

            bound: list[GatewaySession] = []

            async def idle_check() -> None:
                bound.append(session_of(gateway, grant))
                clock.advance(seconds=POLL + IDLE)
                await idle.closed.wait()  # the watch has run its idle check since

            result = await echo_through_gate(client, gate, "held", idle_check)
            assert idle.close_reason == "idle"
            assert not isinstance(result, MCPError), result.error.message
            assert result.structured_content == {"text": "held", "count": 1}
            first = session_of(gateway, grant)
            assert first is bound[0] and not first.closed.is_set()

            # answered, the session grows idle and closes; the agent's MCP session goes on
            # and its next call opens a new gateway session
            clock.advance(seconds=POLL + IDLE)
            await first.closed.wait()
            assert first.close_reason == "idle"
            again = await echo_through_gate(client, gate, "again", anyio.lowlevel.checkpoint)
            assert not isinstance(again, MCPError), again.error.message
            assert session_of(gateway, grant).id != first.id
