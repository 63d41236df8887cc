"""An evidence bundle verifies offline only as proctor made it: the report is signed, so
a changed count, status or gap fails, and every example it cites is checked on its own
against the chain (id, hash, time, action, window, and the query it is cited for)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.audit import human_event
from proctor.clock import FrozenClock, SystemClock
from proctor.config import Settings
from proctor.enforcement import ToolCall
from proctor.grants import GrantScope, make_proof
from proctor.identity import OwnKeyProof
from proctor.keys import LocalSigner
from proctor.oversight.compliance import (
    ReportSources,
    build_report,
    make_bundle,
    verify_bundle,
)
from proctor.runtime import Runtime, init_home, open_runtime
from tests.identity.factories import manifest, public_jwk

AGENT = "spiffe://acme.example/agent/support"
TARGET = "mcp://gateway/tools/call"


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    runtime = open_runtime(settings, clock=FrozenClock(SystemClock().now()))
    yield runtime
    runtime.close()


@pytest.fixture
def bundle(runtime: Runtime) -> dict[str, Any]:
    """A bundle of real decisions: an allowed lookup and a call refused by its grant."""
    key = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(AGENT, owner="bob@acme.example", groups=["support-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
    runtime.enforcer.refresh_principals()
    task = runtime.grants.start_task(AGENT, purpose="help a customer",
                                     on_behalf_of="bob@acme.example")
    grant = runtime.grants.issue(task.id, GrantScope.from_json(
        {"tools": [{"tool": "crm/lookup_customer"}]}))
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    for tool in ("crm/lookup_customer", "billing/refund"):
        proof = make_proof(private, grant.token, method="tools/call", target=TARGET,
                           now=runtime.clock.now())
        runtime.enforcer.decide_call(grant.token, proof, ToolCall(
            tool, {"customer_id": "c-1"} if tool.startswith("crm") else {"amount": 5},
            target=TARGET))
    now = runtime.clock.now()
    signed = human_event("erin@acme.example", "audit.checkpoint", "", "signed", now=now)
    report = build_report(ReportSources(runtime.store, runtime.engine, runtime.policies,
                                        runtime.registry, runtime.clock, keys=runtime.keyring,
                                        audit=runtime.audit, checkpointing=signed),
                          since=now - timedelta(hours=1), until=now + timedelta(seconds=1))
    signer = runtime.keyring.current_signer()
    keys = [v.public_jwk() for v in runtime.keyring.checkpoint_verifiers().values()]
    made = make_bundle(runtime.store, report, keys, signer)
    read: dict[str, Any] = json.loads(json.dumps(made))  # as a reader gets it
    return read


def _evidence(bundle: dict[str, Any], query: str) -> dict[str, Any]:
    return next(f for e in bundle["report"]["entries"] for f in e["evidence"]
                if f["query"] == query)


def test_a_bundle_as_proctor_made_it_verifies(bundle: dict[str, Any]) -> None:
    check = verify_bundle(bundle)
    assert check.is_valid, check.problem
    assert _evidence(bundle, "grant_refusals")["count"] == 1
    assert check.cited >= 2


def test_a_changed_count_status_or_gap_in_the_report_does_not_verify(
        bundle: dict[str, Any]) -> None:
    inflated = copy.deepcopy(bundle)
    for found in (_evidence(inflated, "human_decisions"),):
        found["count"] = 12
    for entry in inflated["report"]["entries"]:
        entry["status"] = "evidenced"
    inflated["report"]["summary"]["gaps"] = 0
    inflated["report"]["gaps"] = []
    check = verify_bundle(inflated)
    assert not check.is_valid
    assert "changed" in (check.problem or "")


def test_a_citation_of_an_event_not_in_the_chain_does_not_verify_even_beside_a_real_one(
        bundle: dict[str, Any]) -> None:
    forged = copy.deepcopy(bundle)
    real = _evidence(forged, "tool_decisions")["examples"][0]
    # a made-up human approval at the position of a real event, listed before it
    _evidence(forged, "human_decisions")["examples"] = [
        {**real, "id": "01FORGEDAPPROVAL0000000000", "action": "approval.approve"}]
    check = verify_bundle(forged)
    assert not check.is_valid


def test_a_real_event_cited_as_evidence_of_another_query_does_not_verify(
        runtime: Runtime, bundle: dict[str, Any]) -> None:
    # even signed by proctor's own key, a report citing an agent's call as a human's
    # decision does not verify: each example must be an event of its query
    from proctor.oversight.compliance.bundle import sign_report

    relabelled = copy.deepcopy(bundle)
    real = _evidence(relabelled, "tool_decisions")["examples"][0]
    _evidence(relabelled, "human_decisions")["examples"] = [dict(real)]
    relabelled["report_signature"] = sign_report(runtime.keyring.current_signer(),
                                                 relabelled["report"])
    check = verify_bundle(relabelled)
    assert not check.is_valid
    assert "is not evidence of `human_decisions`" in (check.problem or "")


def test_a_report_signed_by_another_key_does_not_verify_with_the_trusted_key(
        runtime: Runtime, bundle: dict[str, Any]) -> None:
    from proctor.oversight.compliance.bundle import sign_report

    other = LocalSigner.generate()
    resigned = copy.deepcopy(bundle)
    resigned["report"]["summary"]["gaps"] = 0
    resigned["report_signature"] = sign_report(other, resigned["report"])
    resigned["keys"].append(other.public_jwk())
    trusted = [v.public_jwk() for v in runtime.keyring.checkpoint_verifiers().values()]
    assert not verify_bundle(resigned, trusted=trusted).is_valid
    unsigned = copy.deepcopy(bundle)
    del unsigned["report_signature"]
    assert verify_bundle(unsigned).problem == "the report is not signed"
