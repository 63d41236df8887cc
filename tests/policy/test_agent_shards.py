"""Agents in shards: decisions are those of the whole graph, and a change to one agent
rebuilds its shard alone."""

from __future__ import annotations

import random

import cedarpy
import pytest

from proctor.errors import ConfigError
from proctor.policy import EntityRef, Outcome, PolicyEngine
from proctor.policy.agent_shards import SHARD_SIZE
from proctor.policy.engine import _interpret
from proctor.policy.entities import agent_entity, principal_entities

from .helpers import call, engine_with

POLICIES = """
@id("coders-log")
permit (principal in Group::"coders", action == Action::"tool:git/git_log", resource)
when { principal.risk_score < 50 };
@id("owned-by-alice")
permit (principal, action == Action::"tool:pay/create_payment", resource)
when { principal.owner == Human::"alice" && context.args.amount_cents < 1000 };
@id("lead-pays")
permit (principal in Group::"leads", action == Action::"tool:pay/create_payment", resource);
@id("no-drifted")
forbid (principal, action, resource) unless { principal.trust_state == "trusted" };
@id("risky")
forbid (principal, action, resource) when { principal.risk_score > 90 };
"""
GROUPS = ("coders", "leads", "ops", "nested")
OWNERS = ("alice", "bob", "carol")  # bob and carol are in no principals file


def _handle(engine: PolicyEngine, agent_id: str) -> cedarpy.Entities:
    return engine.entities_for(EntityRef("Agent", agent_id))


def _agent(i: int, rng: random.Random) -> dict[str, object]:
    return agent_entity(
        f"spiffe://acme.example/agent/a{i}", owner=rng.choice(OWNERS),
        groups=rng.sample(GROUPS, rng.randint(0, 2)),
        trust_state=rng.choice(("trusted", "trusted", "drifted", "suspended")),
        risk_score=rng.randint(0, 100))


def _fleet(count: int, seed: int = 5):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    base = principal_entities({"humans": [{"id": "alice", "groups": ["leads"]}],
                               "groups": [{"id": "coders"}, {"id": "leads"},
                                          {"id": "nested", "groups": ["leads"]}]})
    agents = [_agent(i, rng) for i in range(count)]
    engine = engine_with(POLICIES)
    engine.set_principals([*base, *agents])
    return engine, agents, rng


def _same_as_whole_graph(engine, agents, rng) -> int:  # type: ignore[no-untyped-def]
    compared = 0
    whole = engine.entities.handle  # every agent in one graph, as before shards
    policies = engine.active
    for entity in [*agents, None]:
        agent = str(entity["uid"]["id"]) if entity else "spiffe://acme.example/agent/ghost"
        for tool, args in (("git/git_log", {"repo_path": "/srv"}),
                           ("pay/create_payment", {"amount_cents": rng.randint(0, 2000)})):
            request = call(tool, args, agent=agent)
            expected = _interpret(cedarpy.is_authorized(
                engine._cedar_request(request), policies.full, whole,
                schema=engine.schema.handle), request, policies)
            assert engine.decide(request) == expected, f"{agent} on {tool}"
            compared += 1
    return compared


def test_decisions_over_shards_are_those_over_the_whole_graph() -> None:
    engine, agents, rng = _fleet(6 * SHARD_SIZE)
    assert engine._agents.shard_count >= 8
    assert _same_as_whole_graph(engine, agents, rng) == 2 * (len(agents) + 1)


def test_a_change_to_one_agent_rebuilds_its_shard_alone_and_is_decided_at_once() -> None:
    engine, agents, rng = _fleet(4 * SHARD_SIZE)
    target = next(a for a in agents if a["attrs"]["trust_state"] == "trusted"
                  and "coders" in [p["id"] for p in a["parents"]]
                  and a["attrs"]["risk_score"] < 50)
    agent_id = str(target["uid"]["id"])
    request = call("git/git_log", {"repo_path": "/srv"}, agent=agent_id)
    assert engine.decide(request).outcome is Outcome.ALLOW
    others = {a: _handle(engine, a) for a in
              (str(e["uid"]["id"]) for e in agents) if a != agent_id}
    own = _handle(engine, agent_id)

    engine.put_agent(agent_entity(agent_id, owner=target["attrs"]["owner"]["__entity"]["id"],
                                  groups=["coders"], trust_state="suspended", risk_score=10))

    assert engine.decide(request).outcome is Outcome.DENY
    assert _handle(engine, agent_id) is not own
    rebuilt = [a for a, handle in others.items() if _handle(engine, a) is not handle]
    assert rebuilt and len(rebuilt) < 2 * SHARD_SIZE  # its shard-mates, no one else
    agents = [a for a in agents if a["uid"]["id"] != agent_id]
    assert engine.agent_entity(agent_id)["attrs"]["trust_state"] == "suspended"
    assert _same_as_whole_graph(engine, agents, rng) > 0


def test_a_growing_fleet_doubles_the_shards_and_decides_the_same() -> None:
    engine, agents, rng = _fleet(SHARD_SIZE)
    before = engine._agents.shard_count
    for i in range(len(agents), 5 * SHARD_SIZE):
        agent = _agent(i, rng)
        agents.append(agent)
        engine.put_agent(agent)
    assert engine._agents.shard_count > before
    engine.remove_agent(str(agents.pop()["uid"]["id"]))
    _same_as_whole_graph(engine, agents, rng)


def test_a_malformed_agent_entity_is_refused_and_changes_nothing() -> None:
    engine, agents, _ = _fleet(SHARD_SIZE)
    agent_id = str(agents[0]["uid"]["id"])
    before = _handle(engine, agent_id)
    broken = {**agents[0], "attrs": {**agents[0]["attrs"], "risk_score": "high"}}
    with pytest.raises(ConfigError):
        engine.put_agent(broken)
    assert _handle(engine, agent_id) is before
    assert engine.agent_entity(agent_id) == agents[0]
    with pytest.raises(ConfigError):
        engine.put_agent({"uid": {"type": "Human", "id": "x"}, "attrs": {}, "parents": []})


def test_a_decision_naming_its_agents_entity_is_taken_on_it_whatever_the_engine_holds() -> None:
    """A caller decides on the agent as it read it (``agent=``): an older (or newer)
    entity another thread put meanwhile is not what it is evaluated on; the one it names
    is put in its place, and, held already, costs no rebuild."""
    engine, agents, _ = _fleet(2 * SHARD_SIZE)
    target = next(a for a in agents if a["attrs"]["trust_state"] == "trusted"
                  and "coders" in [p["id"] for p in a["parents"]]
                  and a["attrs"]["risk_score"] < 50)
    agent_id = str(target["uid"]["id"])
    owner = target["attrs"]["owner"]["__entity"]["id"]
    risky = agent_entity(agent_id, owner=owner, groups=["coders"], risk_score=95)
    calm = agent_entity(agent_id, owner=owner, groups=["coders"], risk_score=10)
    request = call("git/git_log", {"repo_path": "/srv"}, agent=agent_id)
    engine.put_agent(calm)  # another thread's put of another version

    assert engine.decide(request, agent=risky).outcome is Outcome.DENY
    assert engine.agent_entry(agent_id) is risky
    held = _handle(engine, agent_id)
    assert engine.decide(request, agent=risky).outcome is Outcome.DENY
    assert _handle(engine, agent_id) is held  # held already: no rebuild
    engine.put_agent(calm)
    assert engine.decide(request, agent=risky).outcome is Outcome.DENY
    assert engine.decide(request, agent=calm).outcome is Outcome.ALLOW
    assert engine.decide(request, agent=dict(calm)).outcome is Outcome.ALLOW  # an equal one
    assert engine.agent_entry(agent_id) is calm


def test_a_decision_naming_another_agents_entity_is_denied() -> None:
    engine, agents, _ = _fleet(SHARD_SIZE)
    request = call("git/git_log", {"repo_path": "/srv"}, agent=str(agents[0]["uid"]["id"]))
    decision = engine.decide(request, agent=agents[1])
    assert (decision.outcome, decision.code.value) == (Outcome.DENY, "engine_error")
    broken = {**agents[0], "attrs": {**agents[0]["attrs"], "risk_score": "high"}}
    decision = engine.decide(request, agent=broken)
    assert (decision.outcome, decision.code.value) == (Outcome.DENY, "engine_error")
    assert engine.agent_entity(str(agents[0]["uid"]["id"])) == agents[0]
