"""The operator's side of the examples, through the API with the admin token: register the
agent with its public key, approve what it waits for, revoke its grant. In a real
deployment a human does these in the console or with ``proctor``."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

import httpx

from proctor.client import AgentKey, Verdict

__all__ = ["OWNER", "Operator", "Outcomes"]

OWNER = "bob@acme.example"


@dataclass
class Outcomes:
    """What each step of an example showed: a step name and proctor's code for it."""

    steps: dict[str, str] = field(default_factory=dict)

    def record(self, step: str, code: str) -> None:
        self.steps[step] = code
        print(f"{step:>10}: {code}")


class Operator:
    def __init__(self, base_url: str, admin_token: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10.0,
                                 headers={"Authorization": f"Bearer {admin_token}"})
        self.approved: list[str] = []

    def register_agent(self, name: str, group: str = "support-agents") -> tuple[str, AgentKey]:
        """A fresh agent (its name made unique) with a new key; returns its id and key."""
        agent_id = f"spiffe://acme.example/agent/{name}-{uuid.uuid4().hex[:8]}"
        key = AgentKey.generate()
        digest = "sha256:" + "0" * 64
        response = self.http.post("/v1/agents", json={
            "id": agent_id, "owner": OWNER, "groups": [group],
            "proof": {"method": "own_key", "jwk": key.public_jwk()},
            "manifest": {"model_id": "example-model", "weights_digest": digest,
                         "system_prompt_digest": digest, "tools": [],
                         "dependency_lock_digest": digest}})
        response.raise_for_status()
        return agent_id, key

    def approve(self, approval_id: str) -> None:
        response = self.http.post(f"/v1/approvals/{approval_id}/approve",
                                  json={"comment": "checked with the customer"})
        response.raise_for_status()
        self.approved.append(approval_id)

    def approve_when_asked(self, verdict: Verdict) -> None:
        """An ``on_approval`` callback: a human would be paged; here one approves at once,
        from another thread, as a person in the console would."""
        assert verdict.approval is not None
        threading.Thread(target=self.approve, args=(verdict.approval.id,)).start()

    def revoke(self, accessor: str) -> None:
        self.http.post(f"/v1/grants/{accessor}/revoke",
                       json={"reason": "the customer closed the ticket"}).raise_for_status()

    def close(self) -> None:
        self.http.close()
