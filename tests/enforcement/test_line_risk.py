"""A delegated grant's use is re-gated by the risk of every agent of its line.

The coder (A) hands a grant on to the support agent (B). When A's behaviour risk rises to
the deployment's ``delegator_max_risk`` (80 by default: the example policies deny an
agent everything from there) A lends nothing any more: B's calls under the grant, and any
hand-on of it, are refused ``delegator_not_trusted`` (audited) until A's score is below
the limit again (nothing is revoked). Decided per use from this process's view of the
agents, and confirmed by the use's write on the rows as committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.audit import EventFilter, search_events
from proctor.clock import FrozenClock
from proctor.config import Settings, load_settings
from proctor.errors import ConfigError, GrantError
from proctor.identity import OwnKeyProof
from proctor.policy import Outcome
from proctor.runtime import Runtime, init_home, open_runtime
from tests.identity.factories import manifest, public_jwk

from .conftest import CODER, OWNER, SUPPORT, TARGET, Agents
from .lines import ANALYST, ARGS, TIME, TOOLS, exchange, handed_on, with_analyst


@pytest.fixture
def line(runtime: Runtime, agents: Agents) -> Agents:
    return with_analyst(runtime, agents)


def test_a_risky_delegator_lends_nothing_until_its_risk_falls(
        runtime: Runtime, agents: Agents) -> None:
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    runtime.registry.set_risk_score(CODER, 79)
    assert agents.call(child, TIME, ARGS).is_allowed  # below the limit
    runtime.registry.set_risk_score(CODER, 85)
    verdict = agents.call(child, TIME, ARGS)
    assert (verdict.outcome, verdict.code) == (Outcome.DENY, "delegator_not_trusted")
    assert CODER in verdict.reasons[0] and "85" in verdict.reasons[0]
    [event] = [e.event for e in search_events(runtime.store, EventFilter())
               if e.event["outcome"] == "denied"
               and e.event["detail"].get("code") == "delegator_not_trusted"]
    assert (event["id"], event["actor"]["id"]) == (verdict.event_id, SUPPORT)
    # the risky coder hands nothing on either
    with pytest.raises(GrantError) as refused:
        exchange(runtime, agents, held, SUPPORT)
    assert refused.value.code == "delegator_not_trusted"
    runtime.registry.set_risk_score(CODER, 20)  # nothing was revoked
    assert agents.call(child, TIME, ARGS).is_allowed


def test_a_risky_agent_anywhere_in_the_line_re_gates_its_end(
        runtime: Runtime, line: Agents) -> None:
    held = line.grant(CODER, TOOLS, purpose="tell the time")
    middle = handed_on(runtime, line, held, SUPPORT)
    last = handed_on(runtime, line, middle, ANALYST)
    runtime.registry.set_risk_score(SUPPORT, 95)
    assert line.call(last, TIME, ARGS).code == "delegator_not_trusted"
    assert line.call(held, TIME, ARGS).is_allowed  # the coder's own: its line is empty
    with pytest.raises(GrantError) as refused:  # nor does the risky one hand on
        exchange(runtime, line, middle, ANALYST)
    assert refused.value.code == "delegator_not_trusted"


def test_a_risk_committed_by_another_node_before_the_write_is_refused_there(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(runtime, agents, held, SUPPORT)
    use = runtime.grants.prepare(child.token, agents.proof(child), method="tools/call",
                                 target=TARGET, tool_id=TIME, args=ARGS)
    other.registry.set_risk_score(CODER, 90)
    runtime.grants.apply_alone(use)
    assert use.refusal is not None and use.refusal.code == "delegator_not_trusted"
    assert use.accessor is None


@pytest.fixture
def strict(database_url: str, tmp_path: Path, frozen: FrozenClock) -> Iterator[Runtime]:
    home = tmp_path / "strict"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example", delegator_max_risk=40)
    init_home(settings)
    runtime = open_runtime(settings, clock=frozen)
    yield runtime
    runtime.close()


def test_the_limit_is_the_deployments(strict: Runtime) -> None:
    agents = Agents(strict, {})
    for agent_id in (SUPPORT, CODER):
        key = ECKey.generate_key("P-256", private=True)
        strict.registry.register(agent_id, owner=OWNER, groups=["support-agents"],
                                 proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
        private = key.private_key
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        agents.keys[agent_id] = private
    strict.enforcer.refresh_principals()
    held = agents.grant(CODER, TOOLS, purpose="tell the time")
    child = handed_on(strict, agents, held, SUPPORT)
    strict.registry.set_risk_score(CODER, 40)
    assert agents.call(child, TIME, ARGS).code == "delegator_not_trusted"
    assert agents.call(held, TIME, ARGS).is_allowed  # its own calls are policy's


def test_the_limit_setting_is_read_and_checked(tmp_path: Path) -> None:
    env = {"PROCTOR_HOME": str(tmp_path)}
    assert load_settings(env).delegator_max_risk == 80
    assert load_settings({**env, "PROCTOR_DELEGATOR_MAX_RISK": "101"}).delegator_max_risk == 101
    for bad in ("-1", "102", "x", "1.5"):
        with pytest.raises(ConfigError):
            load_settings({**env, "PROCTOR_DELEGATOR_MAX_RISK": bad})
    assert replace(load_settings(env), delegator_max_risk=0).delegator_max_risk == 0
