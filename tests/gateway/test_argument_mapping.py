"""The live tool lists of mcp-server-time and mcp-server-git, through proctor's argument
mapping and through cedar-policy-mcp-schema-generator: why the gateway keeps its own
(docs/gateway.md, "Why proctor's own argument mapping")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from cedar_mcp_schema_generator import generate_schema
from mcp import ClientSession, StdioServerParameters, stdio_client

from proctor.gateway import ToolRegistry, UpstreamConfig
from proctor.policy import DecisionRequest, EntityRef, Outcome, load_bundle
from proctor.policy.context import call_context
from tests.gateway.conftest import EXAMPLES, TIME, git_command, git_repo
from tests.policy.helpers import NOW

pytestmark = pytest.mark.anyio

STUB = """namespace Gw {
  @mcp_principal("Agent")
  entity Agent;
  @mcp_resource("Server")
  entity Server;
}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _listed(command: list[str]) -> list[Any]:
    params = StdioServerParameters(command=command[0], args=command[1:])
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            return list((await client.list_tools()).tools)


async def test_the_real_servers_tools_extend_the_example_engine_and_stay_decidable(
        tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    engine = load_bundle(EXAMPLES).engine()
    registry = ToolRegistry(engine)
    for name, command in (("time", TIME), ("git", git_command(repo))):
        tools = registry.register(UpstreamConfig(name=name, command=tuple(command)),
                                  await _listed(command)).tools
        assert all(t.listed is None or t.tool_id in {s.tool_id for s in engine.catalog}
                   for t in tools.values())
    log = engine.catalog.by_action("tool:git/git_log")
    assert log is not None and "start_timestamp" in log.input_schema["properties"]
    # `string | null` is an optional String (a policy can name it); its null is absent
    assert log.args_shape.fields["start_timestamp"][0].to_cedar() == "String"
    assert "start_timestamp" in log.args_shape.nullable
    for value in (None, "2026-01-01"):
        request = DecisionRequest(
            EntityRef("Agent", "spiffe://acme.example/agent/coder"), "tool:git/git_log",
            EntityRef("Tool", "git/git_log"),
            call_context(now=NOW, args={"repo_path": "/srv/repos/app", "start_timestamp": value}))
        assert engine.decide(request).outcome is Outcome.ALLOW


async def test_the_schema_generator_names_actions_by_bare_tool_name_and_rejects_dashes(
        tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    git = [t.model_dump(by_alias=True, exclude_none=True)
           for t in await _listed(git_command(repo))]
    generated = generate_schema(STUB, git)
    assert generated["isOk"], generated["error"]
    schema = generated["schema"]
    assert 'action "git_log"' in schema          # no server in the name: servers collide
    assert "typeChoice0" in schema                # unions become records of choices
    assert "input:" in schema and "args" not in schema
    dashed = [{**git[0], "name": "get-current-time"}]
    refused = generate_schema(STUB, dashed)
    assert not refused["isOk"] and "unexpected token" in refused["error"]
