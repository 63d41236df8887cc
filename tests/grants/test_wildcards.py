"""A wildcard scope names the tools decided when the grant was issued; a tool that appears
later is decided when it is first called, as the issuance it would have been — never
covered without a decision (security review, finding 2). Every process knows the tools
any process discovered."""

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


def test_a_tool_that_appears_later_is_decided_by_the_issuance_policy_first(
        setup: Setup) -> None:
    # The issuance policy forbids granting restricted tools without a purpose: the
    # grant of `git/*` was decided before git_push_force existed, so its first call
    # is decided as an issuance now, and refused.
    task = setup.authority.start_task(CODER, purpose="", on_behalf_of="alice@acme.example")
    grant = setup.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    assert "git/git_push_force" not in [e.tool for e in grant.claims.scope.tools]
    setup.engine.extend_catalog([PUSH])
    assert _use(setup, grant, "git/git_push_force", {"repo_path": "/srv/x"}) \
        == "issuance_denied"
    assert _use(setup, grant, "git/git_log", {"repo_path": "/srv/x"}) == "ok"
    # asking again decides the new tool with the rest, and the policy refuses it
    with pytest.raises(GrantError) as caught:
        setup.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    assert caught.value.code == "issuance_denied"
    assert "git/git_push_force" in caught.value.message


def test_a_later_tool_the_issuance_policy_allows_works_and_is_audited(setup: Setup) -> None:
    from proctor.audit import AuditLog, EventFilter, search_events

    audit = AuditLog(setup.store, clock=setup.clock)
    authority = GrantAuthority(setup.store, setup.clock, setup.codec, setup.engine,
                               setup.agents, audit=audit)
    task = authority.start_task(CODER, purpose="release", on_behalf_of="alice@acme.example")
    grant = authority.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": "git/*", "args": {"repo_path": {"prefix": ["/srv/"]}}}]}))
    setup.engine.extend_catalog([PUSH])

    def use(args: dict[str, Any]) -> str:
        proof = make_proof(setup.agents.keys[CODER], grant.token, method="tools/call",
                           target=TARGET, now=setup.clock.now())
        try:
            authority.check(grant.token, proof, method="tools/call", target=TARGET,
                            tool_id="git/git_push_force", args=args)
        except GrantError as exc:
            return exc.code
        return "ok"

    assert use({"repo_path": "/srv/x"}) == "ok"
    assert use({"repo_path": "/srv/x"}) == "ok"  # decided once per grant and revision
    assert use({"repo_path": "/etc"}) == "grant_out_of_scope"  # the wildcard's constraint
    audit.close()
    decided = [e.event for e in search_events(setup.store, EventFilter(), limit=100)
               if e.event["target"] == 'Tool::"git/git_push_force"']
    assert [e["action"] for e in decided] == ["grant:issue"]


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


def test_a_delegated_wildcard_stays_open_only_where_the_parents_was(setup: Setup) -> None:
    from proctor.grants.authority import EXCHANGE_METHOD

    from .conftest import ISSUER, SUPPORT

    task = setup.authority.start_task(CODER, purpose="release", on_behalf_of="a@acme.example")
    wild = setup.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    exact = setup.authority.issue(task.id, GrantScope.from_json({"tools": [
        {"tool": "git/git_log"}]}))

    def delegate(parent: IssuedGrant) -> IssuedGrant:
        proof = make_proof(setup.agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                           target=ISSUER, now=setup.clock.now())
        child = setup.authority.exchange(parent.token, proof, to_agent=SUPPORT, ttl_seconds=60,
                                         scope=GrantScope.from_json({"tools": [
                                             {"tool": "git/*"}]}))
        assert isinstance(child, IssuedGrant)
        return child

    assert delegate(wild).claims.wildcards is not None
    narrowed = delegate(exact)
    assert narrowed.claims.wildcards is None
    assert [e.tool for e in narrowed.claims.scope.tools] == ["git/git_log"]


def test_a_later_tool_of_a_delegated_wildcard_is_decided_for_every_agent_of_its_line(
        setup: Setup) -> None:
    # The coder may never be issued git_push_force; its `git/*` grant was decided before
    # the tool existed, and it hands `git/*` on to the support agent, whom the policy
    # would issue it. The child may use no more than its parent could: the later tool
    # is decided for the coder as well, and refused (it was decided for the support
    # agent alone, and allowed).
    from proctor.grants.authority import EXCHANGE_METHOD

    from .conftest import ISSUER, SUPPORT

    bundle = load_bundle(EXAMPLES)
    setup.engine.activate(setup.engine.compile({**bundle.sources, "never.cedar": (
        '@id("coder-never-pushes")\n'
        f'forbid (principal == Agent::"{CODER}", action == Action::"grant:issue", '
        'resource == Tool::"git/git_push_force");\n')}))
    task = setup.authority.start_task(CODER, purpose="release", on_behalf_of="a@acme.example")
    parent = setup.authority.issue(task.id, GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    setup.engine.extend_catalog([PUSH])
    assert _use(setup, parent, "git/git_push_force", {"repo_path": "/srv/x"}) \
        == "issuance_denied"
    proof = make_proof(setup.agents.keys[CODER], parent.token, method=EXCHANGE_METHOD,
                       target=ISSUER, now=setup.clock.now())
    child = setup.authority.exchange(parent.token, proof, to_agent=SUPPORT, ttl_seconds=60,
                                     scope=GrantScope.from_json({"tools": [{"tool": "git/*"}]}))
    assert isinstance(child, IssuedGrant)
    assert child.claims.wildcards is not None
    assert "git/git_push_force" not in [e.tool for e in child.claims.scope.tools]

    def use_child(tool: str) -> str:
        proof = make_proof(setup.agents.keys[SUPPORT], child.token, method="tools/call",
                           target=TARGET, now=setup.clock.now())
        try:
            setup.authority.check(child.token, proof, method="tools/call", target=TARGET,
                                  tool_id=tool, args={"repo_path": "/srv/x"})
        except GrantError as exc:
            return exc.code
        return "ok"

    assert use_child("git/git_push_force") == "issuance_denied"
    assert use_child("git/git_push_force") == "issuance_denied"  # and again (cached)
    assert use_child("git/git_log") == "ok"
