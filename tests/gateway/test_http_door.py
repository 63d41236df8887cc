"""The HTTP gateway's door: a call on a live session is checked in the store once, by its
decision (one hop to a worker thread), and is still refused the moment its grant is
revoked; a request the gateway does not decide keeps the door's own store check."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from proctor.clock import FrozenClock, SystemClock
from proctor.grants import CheckedGrant
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import Gate, agent, echo_through_gate, gateway_on

pytestmark = pytest.mark.anyio


async def _nothing() -> None:
    pass


async def test_a_call_on_a_live_session_is_checked_once_and_refused_once_revoked(
        deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grant = deployment.grant()
    clock = FrozenClock(SystemClock().now())  # the watch never polls: only the call can see
    gate = Gate(tmp_path)
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client:
            first = await echo_through_gate(client, gate, "first", _nothing)
            assert not isinstance(first, MCPError)
            inspected: list[str] = []
            inspect = gateway.grants.inspect

            def counted(token: str) -> CheckedGrant:
                inspected.append(token)
                return inspect(token)

            monkeypatch.setattr(gateway.grants, "inspect", counted)
            result = await client.call_tool("echo", {"text": "second"})
            assert result.structured_content is not None
            assert result.structured_content["text"] == "second"
            assert inspected == []  # the decision checked the grant; the door did not again
            await client.list_tools()
            assert inspected == [grant.token]  # not decided: the door reads the store

            await anyio.to_thread.run_sync(deployment.runtime.grants.revoke, grant.accessor,
                                           "incident 14")
            with pytest.raises(MCPError) as refused:
                await client.call_tool("echo", {"text": "third"})
            assert refused.value.error.data["reason"] == "grant_revoked"
