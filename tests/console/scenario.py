"""A realistic deployment for the console: agents in each trust state, tasks with
delegated grants, pending and decided approvals, an invalid candidate policy and a
shadowed one with differences — all made through the real parts, with real keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.approvals import ApprovalDesk
from proctor.enforcement import CallVerdict, ToolCall
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime
from proctor.server import ApiTokens
from tests.identity.factories import manifest, public_jwk

DOMAIN = "spiffe://acme.example/agent/"
SUPPORT, TRIAGE, NOTIFIER, CODER = (DOMAIN + n for n in ("support", "triage", "notifier",
                                                        "coder"))
OWNER = "bob@acme.example"
APPROVER = "erin@acme.example"
TARGET = "https://gateway.acme.example/mcp"
XSS = "<script>alert('xss')</script>"
CALL_TOOLS = [{"tool": "crm/issue_refund"}, {"tool": "email/send_email"},
              {"tool": "crm/lookup_customer"}]


@dataclass
class Scenario:
    runtime: Runtime
    admin_token: str
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    grants: dict[str, IssuedGrant] = field(default_factory=dict)

    def register(self, agent_id: str, group: str, owner: str = OWNER) -> None:
        key = ECKey.generate_key("P-256", private=True)
        self.runtime.registry.register(agent_id, owner=owner, groups=[group],
                                       proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
        private = key.private_key
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        self.keys[agent_id] = private

    def proof(self, grant: IssuedGrant, method: str = "tools/call", target: str = TARGET) -> str:
        return make_proof(self.keys[grant.claims.agent_id], grant.token, method=method,
                          target=target, now=self.runtime.clock.now())

    def call(self, grant: IssuedGrant, tool: str, args: dict[str, Any]) -> CallVerdict:
        return self.runtime.enforcer.decide_call(grant.token, self.proof(grant),
                                                 ToolCall(tool, args, target=TARGET))

    def start(self, agent_id: str, purpose: str, tools: list[dict[str, Any]] | None = None,
              on_behalf_of: str = OWNER) -> IssuedGrant:
        task = self.runtime.grants.start_task(agent_id, purpose=purpose,
                                              on_behalf_of=on_behalf_of)
        return self.runtime.grants.issue(task.id, GrantScope.from_json(
            {"tools": tools or CALL_TOOLS}), ttl_seconds=900)

    def delegate(self, parent: IssuedGrant, to: str, tools: list[dict[str, Any]]
                 ) -> IssuedGrant:
        """A child grant, living a minute less than its parent (never longer)."""
        proof = self.proof(parent, method="grant/exchange", target=self.runtime_issuer)
        left = parent.claims.expires_at - int(self.runtime.clock.now().timestamp())
        made = self.runtime.grants.exchange(parent.token, proof, to_agent=to,
                                            scope=GrantScope.from_json({"tools": tools}),
                                            ttl_seconds=left - 60)
        assert isinstance(made, IssuedGrant)  # the console's agents have registered keys
        return made

    @property
    def runtime_issuer(self) -> str:
        return f"spiffe://{self.runtime.settings.trust_domain}/proctor"

    def desk(self) -> ApprovalDesk:
        rt = self.runtime
        return ApprovalDesk(rt.store, rt.clock, rt.approvals, rt.grants, rt.engine)


def build(runtime: Runtime, *, rich: bool = True) -> Scenario:
    """Agents, tasks and grants; with ``rich``, history too (decided approvals, drift,
    policy candidates) so that every page has something to show."""
    minted = ApiTokens(runtime.store, runtime.clock).ensure_admin()
    assert minted is not None
    scenario = Scenario(runtime, minted.token)
    scenario.register(SUPPORT, "support-agents")
    scenario.register(TRIAGE, "support-agents")
    scenario.register(NOTIFIER, "support-agents", owner=f"carol@acme.example {XSS}")
    scenario.register(CODER, "coding-agents")
    runtime.enforcer.refresh_principals()
    if not rich:
        return scenario
    history = scenario.start(SUPPORT, "refund a damaged order")
    for amount, approve in ((19_900, True), (87_500, False)):
        held = scenario.call(history, "crm/issue_refund",
                             {"customer_id": "c-2207", "amount_cents": amount})
        assert held.approval is not None
        scenario.desk().decide(held.approval.id, approver=APPROVER, approve=approve,
                               comment="receipt checked" if approve else "over the goodwill limit")
    scenario.call(history, "crm/lookup_customer", {"customer_id": "c-2207"})
    scenario.call(history, "email/send_email", {"to": "ops@acme.example", "subject": "Refund",
                                                "body": "Refunded c-2207."})
    runtime.registry.present_manifest(CODER, manifest(
        model_id="claude-sonnet-4.5", system_prompt_digest="sha256:" + "d" * 64,
        tools=("git/git_log", "git/git_commit", "time/get_current_time")))
    runtime.enforcer.refresh_principals()
    runtime.policies.add_candidate(
        {"support.cedar": '@id("refund-any")\npermit (principal in Group::"support-agents", '
                          'action == Action::"tool:crm/refund_all", resource);\n'},
        origin="uploaded by dave@acme.example")
    return scenario
