"""The approval path through ``proctor mcp wrap`` (in process, on its own runtime): a call
a policy holds for a human waits, a human approves it through another runtime on the same
store (as the console would), and the call goes through; a wait that runs out names the
approval, which the agent can use once it is approved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from proctor.approvals import ApprovalStatus
from tests.gateway.conftest import APPROVER, WAIT, Deployment, git_command
from tests.gateway.in_process import wrapped

pytestmark = pytest.mark.anyio



async def _pending(deployment: Deployment) -> str:
    """The id of the one pending approval, once the gateway has asked for it."""
    with anyio.fail_after(WAIT):
        while True:
            pending = await anyio.to_thread.run_sync(
                lambda: deployment.runtime.approvals.list(status=ApprovalStatus.PENDING))
            if pending:
                assert len(pending) == 1
                return pending[0].id
            await anyio.sleep(0.05)


def _config(deployment: Deployment, seconds: float) -> Path:
    return deployment.config({"gateway": {"approval_timeout_seconds": seconds},
                              "upstreams": {"git": {"command": git_command(deployment.repo)}}})


async def test_a_held_call_goes_through_once_approved_and_fails_once_denied(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    config = _config(deployment, WAIT)
    args = {"repo_path": str(deployment.repo)}
    outcome: dict[str, Any] = {}
    async with wrapped(deployment, grant, [], config=config, server="git") as client:

        async def reset(key: str) -> None:
            try:
                outcome[key] = await client.call_tool("git_reset", args)
            except MCPError as exc:
                outcome[key] = exc

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reset, "approved")
            approval_id = await _pending(deployment)
            approval = deployment.runtime.approvals.get(approval_id)
            assert (approval.tool_id, approval.agent_id) == ("git/git_reset",
                                                             grant.claims.agent_id)
            deployment.runtime.approvals.decide(approval_id, approver=APPROVER, approve=True,
                                                comment="ok, nothing staged")
        assert "reset" in outcome["approved"].content[0].text.lower()
        assert deployment.runtime.approvals.get(approval_id).status is ApprovalStatus.USED

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(reset, "denied")
            second = await _pending(deployment)
            deployment.runtime.approvals.decide(second, approver=APPROVER, approve=False)
    denied = outcome["denied"]
    assert isinstance(denied, MCPError)
    assert denied.error.data["reason"] == "approval_denied"


async def test_a_wait_that_runs_out_names_the_approval_which_can_be_used_once_approved(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    config = _config(deployment, 0.5)
    args = {"repo_path": str(deployment.repo)}
    async with wrapped(deployment, grant, [], config=config, server="git") as client:
        with pytest.raises(MCPError) as pending:
            await client.call_tool("git_reset", args)
        data = pending.value.error.data
        assert data["reason"] == "approval_pending"
        approval_id = data["approval_id"]
        assert approval_id in pending.value.message
        deployment.runtime.approvals.decide(approval_id, approver=APPROVER, approve=True)
        again = await client.call_tool("git_reset", args)
        assert not again.is_error
        with pytest.raises(MCPError) as once:  # used: the next reset asks again
            await client.call_tool("git_reset", args)
        assert once.value.error.data["approval_id"] != approval_id
