"""`proctor approvals` as an operator uses it, against requests a real agent's calls made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from proctor.approvals import ApprovalStatus
from proctor.cli.main import app
from proctor.config import load_settings
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, open_runtime
from tests.cli.audited import account, chain_verifies, human_events
from tests.enforcement.conftest import APPROVER, OWNER, SUPPORT, Agents, refund
from tests.identity.factories import manifest, public_jwk

runner = CliRunner()
REFUND = [{"tool": "crm/issue_refund"}]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PROCTOR_HOME", str(home))
    monkeypatch.setenv("PROCTOR_TRUST_DOMAIN", "acme.example")
    monkeypatch.setenv("PROCTOR_DATABASE_URL", database_url)
    for var in ("PROCTOR_CONFIG", "PROCTOR_IDENTITY_CONFIG", "PROCTOR_MASTER_KEY",
                "PROCTOR_WEBHOOK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert runner.invoke(app, ["init"]).exit_code == 0
    return home


@pytest.fixture
def agents(home: Path) -> Iterator[Agents]:
    runtime: Runtime = open_runtime(load_settings())
    key = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(SUPPORT, owner=OWNER, groups=["support-agents"],
                              proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
    runtime.enforcer.refresh_principals()
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    yield Agents(runtime, {SUPPORT: private})
    runtime.close()


def run(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, ["approvals", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def pending(agents: Agents, amount: int = 25_000) -> str:
    verdict = agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund", refund(amount))
    assert verdict.approval is not None
    return verdict.approval.id


def test_list_show_and_approve_a_waiting_call(agents: Agents) -> None:
    approval_id = pending(agents)
    code, listed = run("list")
    assert code == 0
    assert [a["id"] for a in listed["approvals"]] == [approval_id]
    code, shown = run("show", approval_id)
    assert code == 0
    assert shown["request"]["reasons"] == ["refunds over 50.00 need a human's approval"]
    assert shown["request"]["args"] == refund(25_000)
    assert (shown["agent"], shown["on_behalf_of"]) == (SUPPORT, OWNER)
    code, decided = run("approve", approval_id, "--by", APPROVER, "--comment", "verified")
    assert code == 0
    assert decided["approval"]["status"] == "approved"
    assert decided["approval"]["decided_by"] == APPROVER
    assert agents.runtime.approvals.get(approval_id).status is ApprovalStatus.APPROVED
    assert run("list")[1]["approvals"] == []
    assert [a["id"] for a in run("list", "--status", "approved")[1]["approvals"]] == [
        approval_id]


def test_approve_similar_and_deny(agents: Agents) -> None:
    first, second = pending(agents, 25_000), pending(agents, 30_000)
    code, decided = run("approve", first, "--by", APPROVER, "--similar", "--similar-uses", "2")
    assert code == 0, decided
    assert decided["similar_grant"]["max_uses"] == 2
    assert decided["similar_grant"]["scope"]["tools"][0]["args"]["customer_id"] == {
        "in": ["c-1001"]}
    code, denied = run("deny", second, "--by", APPROVER, "--comment", "too much")
    assert code == 0
    assert denied["approval"]["status"] == "denied"


@pytest.mark.parametrize(("by", "code"), [
    (OWNER, "approval_own_request"),
    (OWNER.upper(), "approval_own_request"),
    (SUPPORT, "reviewer_invalid"),
    (SUPPORT.upper(), "reviewer_invalid"),
    ("b\u200dob@acme.example", "reviewer_invalid"),
])
def test_the_owner_or_an_agent_cannot_approve(agents: Agents, by: str, code: str) -> None:
    approval_id = pending(agents)
    exit_code, answer = run("approve", approval_id, "--by", by)
    assert exit_code == 1
    assert answer["error"]["code"] == code
    assert agents.runtime.approvals.get(approval_id).status is ApprovalStatus.PENDING


def test_bad_input_gets_one_line_and_a_non_zero_exit(agents: Agents) -> None:
    approval_id = pending(agents)
    assert run("approve", approval_id, "--by", APPROVER)[0] == 0
    twice = runner.invoke(app, ["approvals", "approve", approval_id, "--by", APPROVER])
    assert twice.exit_code == 1
    assert twice.stderr.strip() == f"error: approval `{approval_id}` is already approved"
    unknown = runner.invoke(app, ["approvals", "deny", "apr_nope", "--by", APPROVER])
    assert (unknown.exit_code, unknown.stderr.count("\n")) == (1, 1)
    assert "does not exist" in unknown.stderr
    assert run("list", "--status", "maybe")[1]["error"]["code"] == "request_invalid"
    lonely = run("approve", approval_id, "--by", APPROVER, "--vary", "customer_id")
    assert lonely[1]["error"]["code"] == "request_invalid"


def test_a_decision_is_the_operators_event_with_the_account_beside_it(
    agents: Agents, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = pending(agents, 25_000), pending(agents, 30_000)
    monkeypatch.setenv("PROCTOR_OPERATOR", APPROVER)  # the approver when there is no --by
    assert run("approve", first)[0] == 0
    assert run("deny", second, "--by", "dave@acme.example")[0] == 0
    decisions = [(e["action"], e["target"], e["actor"]["type"], e["actor"]["id"],
                  e["detail"]["os_user"], e["source"]) for e in human_events()[-2:]]
    assert decisions == [
        ("approval.grant", f'Approval::"{first}"', "human", APPROVER, account(), "cli"),
        ("approval.deny", f'Approval::"{second}"', "human", "dave@acme.example", account(),
         "cli")]
    assert chain_verifies()


def test_agent_supplied_text_is_printed_as_text(agents: Agents) -> None:
    grant = agents.grant(SUPPORT, [{"tool": "email/send_email"}])
    verdict = agents.call(grant, "email/send_email", {
        "to": "[bold red]x@partner.example[/]", "subject": "<script>alert(1)</script>",
        "body": "hi"})
    assert verdict.approval is not None
    shown = runner.invoke(app, ["approvals", "show", verdict.approval.id])
    assert shown.exit_code == 0
    assert "[bold red]x@partner.example[/]" in shown.stdout
    assert "<script>alert(1)</script>" in shown.stdout
