"""A wildcard scope covers the tools known, and decided, when the grant was issued; a tool
discovered later is out of scope for it, in every process (security review, finding 2)."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.errors import GrantError
from proctor.grants import GrantAuthority, GrantScope, IssuedGrant, make_proof
from proctor.policy import PolicyEngine, Sensitivity, ToolSpec, load_bundle
from proctor.policy.known_tools import KnownTools

from .conftest import CODER, EXAMPLES, Setup

PUSH = ToolSpec(server="git", name="git_push_force", sensitivity=Sensitivity.RESTRICTED,
                input_schema={"type": "object", "properties": {"repo_path": {"type": "string"}}})
TARGET = "mcp://git/git_push_force"


def _use(setup: Setup, grant: IssuedGrant, tool: str, args: dict[str, Any]) -> str:
    proof = make_proof(setup.agents.keys[CODER], grant.token, method="tools/call",
                       target=TARGET, now=setup.clock.now())
    try:
        setup.authority.check(grant.token, proof, method="tools/call", target=TARGET,
                              tool_id=tool, args=args)
    except GrantError as exc:
        return exc.code
    return "ok"


def test_a_wildcard_is_expanded_to_the_tools_decided_at_issuance(setup: Setup) -> None:
    task = setup.authority.start_task(CODER, purpose="", on_behalf_of="alice@acme.example")
    grant = setup.authority.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": "git/*", "args": {"repo_path": {"prefix": ["/srv/"]}}}]}))
    git_tools = sorted(t.tool_id for t in setup.engine.catalog if t.server == "git")
    assert sorted(e.tool for e in grant.claims.scope.tools) == git_tools
    assert all(e.args["repo_path"].prefixes == ("/srv/",) for e in grant.claims.scope.tools)


def test_a_tool_that_appears_later_is_outside_an_earlier_wildcard_grant(setup: Setup) -> None:
    # An issuance policy forbids granting restricted tools without a purpose: the
    # grant of `git/*` was decided before git_push_force existed, so it cannot cover it.
    task = setup.authority.start_task(CODER, purpose="", on_behalf_of="alice@acme.example")
    grant = setup.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    setup.engine.extend_catalog([PUSH])
    assert _use(setup, grant, "git/git_push_force", {"repo_path": "/srv/x"}) \
        == "grant_out_of_scope"
    assert _use(setup, grant, "git/git_log", {"repo_path": "/srv/x"}) == "ok"
    # asking again decides the new tool too, and the policy refuses it
    with pytest.raises(GrantError) as caught:
        setup.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    assert caught.value.code == "issuance_denied"
    assert "git/git_push_force" in caught.value.message


def test_a_tool_discovered_by_one_process_is_known_to_another(setup: Setup) -> None:
    # the gateway's process discovered the tool and recorded it
    KnownTools(setup.store, setup.clock).record([PUSH])
    # another process, with only the bundle's tools, issues a grant naming it
    bundle = load_bundle(EXAMPLES)
    engine = PolicyEngine(bundle.catalog, bundle.principals)
    engine.activate(engine.compile(bundle.sources))
    assert engine.catalog.by_action(PUSH.action_id) is None
    other = GrantAuthority(setup.store, setup.clock, setup.codec, engine, setup.agents,
                           tools=KnownTools(setup.store, setup.clock))
    task = other.start_task(CODER, purpose="release", on_behalf_of="alice@acme.example")
    grant = other.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": "git/git_push_force"}]}))
    assert engine.catalog.by_action(PUSH.action_id) == PUSH
    assert [e.tool for e in grant.claims.scope.tools] == ["git/git_push_force"]


def test_a_scope_naming_no_known_tool_is_refused_even_after_learning(setup: Setup) -> None:
    other = GrantAuthority(setup.store, setup.clock, setup.codec, setup.engine, setup.agents,
                           tools=KnownTools(setup.store, setup.clock))
    task = other.start_task(CODER, purpose="x", on_behalf_of="alice@acme.example")
    with pytest.raises(GrantError) as caught:
        other.issue(task.id, GrantScope.from_json({"tools": [{"tool": "nosuch/*"}]}))
    assert caught.value.code == "scope_invalid"
