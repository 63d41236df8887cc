"""Discovered tools: their labels, their argument checks, the engine extended for them, and
which of them ``tools/list`` shows a grant."""

from __future__ import annotations

from pathlib import Path

import mcp_types as types
import pytest

from proctor.gateway import ToolRegistry, UpstreamConfig, Visibility
from proctor.gateway.config import ToolLabels
from proctor.grants import GrantClaims, GrantScope
from proctor.policy import PolicyEngine, Sensitivity, load_bundle, load_catalog
from tests.gateway.conftest import EXAMPLES

CODER = "spiffe://acme.example/agent/coder"
SUPPORT = "spiffe://acme.example/agent/support"
REPO = {"type": "object", "properties": {"repo_path": {"type": "string"}},
        "required": ["repo_path"]}


@pytest.fixture
def engine() -> PolicyEngine:
    return load_bundle(EXAMPLES).engine()


def _tool(name: str, schema: dict[str, object] | None = None) -> types.Tool:
    return types.Tool(name=name, input_schema=schema or REPO)


def _claims(agent: str, tools: list[dict[str, object]]) -> GrantClaims:
    return GrantClaims(grant_id="grant_x", agent_id=agent, task_id="task_x", issuer="i",
                       audience="proctor", issued_at=0, not_before=0, expires_at=1,
                       scope=GrantScope.from_json({"tools": tools}), key_thumbprint="k",
                       ancestors=(), actor_chain=())


def test_labels_come_from_the_tool_entry_then_the_catalog_then_the_upstream(
        engine: PolicyEngine) -> None:
    upstream = UpstreamConfig(
        name="git", command=("x",), labels=ToolLabels(Sensitivity.RESTRICTED, "git.internal"),
        tools={"git_status": ToolLabels(Sensitivity.PUBLIC)})
    tools = ToolRegistry(engine).register(upstream, [
        _tool("git_status"), _tool("git_log"), _tool("git_branch")]).tools
    assert tools["git_status"].spec.sensitivity is Sensitivity.PUBLIC   # its own entry
    assert tools["git_log"].spec.sensitivity is Sensitivity.INTERNAL    # tools.yaml
    assert tools["git_log"].spec.destination == "localhost"              # tools.yaml
    assert tools["git_branch"].spec.sensitivity is Sensitivity.RESTRICTED  # the upstream's
    assert tools["git_branch"].spec.destination == "git.internal"
    http = UpstreamConfig(name="crm2", url="https://crm.vendor.example/mcp")
    crm = ToolRegistry(engine).register(http, [_tool("lookup")]).tools
    assert crm["lookup"].spec.destination == "crm.vendor.example"
    assert crm["lookup"].spec.sensitivity is Sensitivity.INTERNAL


def test_labels_a_catalog_entry_leaves_out_are_the_upstreams(tmp_path: Path) -> None:
    # an entry naming the tool's connector alone: its sensitivity and destination were the
    # defaults (internal, localhost) and hid the upstream's restricted, remote labels
    (tmp_path / "tools.yaml").write_text(
        "tools:\n  - {server: crm, name: export, connector: salesforce}\n"
        "  - {server: crm, name: lookup, sensitivity: public}\n", encoding="utf-8")
    engine = PolicyEngine(load_catalog(tmp_path / "tools.yaml"))
    upstream = UpstreamConfig(name="crm", url="https://crm.vendor.example/mcp",
                              labels=ToolLabels(Sensitivity.RESTRICTED))
    tools = ToolRegistry(engine).register(upstream, [_tool("export"), _tool("lookup")]).tools
    export = tools["export"].spec
    assert export.sensitivity is Sensitivity.RESTRICTED
    assert export.destination == "crm.vendor.example"
    assert export.connector == "salesforce"
    lookup = tools["lookup"].spec
    assert lookup.sensitivity is Sensitivity.PUBLIC  # what the entry says wins
    assert lookup.destination == "crm.vendor.example" and lookup.connector is None


def test_a_discovered_tool_extends_the_engine_and_its_arguments_are_checked(
        engine: PolicyEngine) -> None:
    tools = ToolRegistry(engine).register(UpstreamConfig(name="git", command=("x",)), [
        _tool("git_tag", {**REPO, "properties": {**REPO["properties"],  # type: ignore[dict-item]
                                                 "revision": {"type": "string"}}})]).tools
    assert engine.catalog.by_action("tool:git/git_tag") is not None
    assert engine.catalog.by_action("tool:git/resources.read") is not None
    show = tools["git_tag"]
    assert show.argument_errors({"repo_path": "/srv/repos/app", "revision": "HEAD"}) is None
    problem = show.argument_errors({"repo_path": "/srv/repos/app", "revision": ["s3cr3t"]})
    assert problem is not None and problem.code == "arguments_invalid"
    assert "`revision`" in problem.message and "s3cr3t" not in problem.message
    missing = show.argument_errors({})
    assert missing is not None and "(arguments)" in missing.message


def test_tools_that_disagree_or_have_a_broken_schema_are_left_out(engine: PolicyEngine) -> None:
    registry = ToolRegistry(engine)
    upstream = UpstreamConfig(name="git", command=("x",))
    registry.register(upstream, [_tool("git_show")])
    later = registry.register(upstream, [
        _tool("git_show", {"type": "object", "properties": {"other": {"type": "string"}}}),
        _tool("git_branch", {"type": "object", "properties": {"x": {"type": 7}}}),
        _tool("resources.read"), _tool("git_show\n")]).tools
    assert "git_show" not in later and "git_branch" not in later
    # a look-alike of a tool's name (a line break at its end) is no tool of its own
    assert "git_show\n" not in later
    assert later["resources.read"].listed is None  # the gateway's own, not the upstream's


def test_a_listing_shows_what_the_scope_covers_and_some_permit_could_allow(
        engine: PolicyEngine) -> None:
    ToolRegistry(engine).register(UpstreamConfig(name="git", command=("x",)), [
        _tool("git_log"), _tool("git_reset"), _tool("git_branch")])
    visibility = Visibility(engine)
    coder = _claims(CODER, [{"tool": "git/*"}])
    assert visibility.shows(coder, "git/git_log")      # coder-git-read, conditions aside
    assert visibility.shows(coder, "git/git_reset")    # a permit that asks for approval
    assert not visibility.shows(coder, "git/git_branch")  # no permit names it
    assert not visibility.shows(coder, "time/get_current_time")  # outside the scope
    support = _claims(SUPPORT, [{"tool": "git/*"}])
    assert not visibility.shows(support, "git/git_log")  # its permits are for coding agents
    anyone = _claims(SUPPORT, [{"tool": "time/*"}])
    assert visibility.shows(anyone, "time/get_current_time")
