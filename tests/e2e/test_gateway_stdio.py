"""An MCP client, through ``proctor mcp wrap``, to real upstreams: mcp-server-time,
mcp-server-git on a temporary repository, and the tests' own server.

The first runs the wrapper as a real process (as an MCP client starts it), on both
backends. The others run it in process (``tests/gateway/in_process.py``: as the command
builds it, over real pipes; mcp-server-git a real process, the tests' own server over
HTTP served in this process): their subject is what is decided, not the process; and on
SQLite only, as what they show does not differ between
backends (the wrapper's behaviour on both is tested in process, in
``test_gateway_oversight.py`` and ``test_gateway_approval.py``)."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import sqlite_only
from tests.e2e.conftest import http_upstream
from tests.gateway.conftest import TIME, Deployment, connected, git_command
from tests.gateway.in_process import wrapped

pytestmark = pytest.mark.anyio



async def test_an_allowed_time_call_works_and_other_time_zones_are_denied_with_the_reason(
        deployment: Deployment) -> None:
    grant = deployment.grant([{"tool": "time/*"}])
    async with connected(deployment.wrap(grant, TIME)) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        assert listed == {"get_current_time", "convert_time"}

        result = await client.call_tool("get_current_time", {"timezone": "Europe/Berlin"})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["timezone"] == "Europe/Berlin"

        with pytest.raises(MCPError) as denied:
            await client.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
        assert denied.value.error.data["reason"] == "no_matching_permit"
        assert "no_matching_permit" in denied.value.message
        assert denied.value.error.data["event_id"]


@sqlite_only
async def test_git_is_allowed_inside_one_repository_only(deployment: Deployment) -> None:
    grant = deployment.grant()
    async with wrapped(deployment, grant, git_command(deployment.repo)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        # the grant covers git/*, and the policies could allow only these
        assert {"git_status", "git_log", "git_reset"} <= tools
        assert "git_branch" not in tools  # no permit names it

        log = await client.call_tool("git_log", {"repo_path": str(deployment.repo)})
        assert "first commit" in log.content[0].text  # type: ignore[union-attr]

        with pytest.raises(MCPError) as denied:
            await client.call_tool("git_log", {"repo_path": str(deployment.other_repo)})
        assert denied.value.error.data["reason"] == "no_matching_permit"


@sqlite_only
async def test_a_forbidden_call_is_refused_naming_the_policy_and_nothing_reaches_upstream(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    async with http_upstream() as url, wrapped(deployment, grant, [], server="test", config=(
            deployment.config({"upstreams": {"test": {"url": url}}}))) as client:
        echoed = await client.call_tool("echo", {"text": "hello"})
        assert echoed.structured_content == {"text": "hello", "count": 1}
        with pytest.raises(MCPError) as denied:
            await client.call_tool("echo", {"text": "a forbidden word"})
        data = denied.value.error.data
        assert (data["reason"], data["policy_ids"]) == ("policy_forbid",
                                                         ["tests-echo-forbidden-word"])
        assert data["reasons"] == ["echo may not say forbidden"]
