"""Any Python function behind proctor: ``@guarded("server/tool")``.

Run against a running ``proctor serve``::

    PROCTOR_URL=http://127.0.0.1:8600 PROCTOR_ADMIN_TOKEN=ptk_… \\
        python -m examples.frameworks.plain_decorator
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from examples.frameworks.operator import OWNER, Operator, Outcomes
from proctor.client import CallRefusedError, Guard, ProctorClient, guarded

__all__ = ["SCOPE", "run"]

SCOPE: list[dict[str, Any] | str] = [
    {"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}},
    "kb/search_articles",
]


def attempt(call: Callable[[], object]) -> str:
    """``allow`` if the function ran, else proctor's code for the refusal."""
    try:
        call()
    except CallRefusedError as refused:
        return refused.code
    return "allow"


def run(base_url: str, admin_token: str) -> dict[str, str]:
    operator = Operator(base_url, admin_token)
    outcomes = Outcomes()
    agent_id, key = operator.register_agent("support")
    with ProctorClient(base_url, agent_id, key, approval_timeout_seconds=30,
                       on_approval=operator.approve_when_asked) as client:
        task = client.start_task("refund a lost parcel", on_behalf_of=OWNER)
        grant = client.issue_grant(task, SCOPE)
        guard = Guard(client, grant)

        @guarded("crm/issue_refund", guard=guard)
        def issue_refund(customer_id: str, amount_cents: int) -> str:
            return f"refunded {amount_cents} cents to {customer_id}"

        @guarded("email/send_email", guard=guard)
        def send_email(to: str, subject: str, body: str) -> str:
            return f"sent to {to}"

        outcomes.record("allowed", attempt(lambda: issue_refund("c-1001", 2500)))
        outcomes.record("denied", attempt(lambda: send_email("a@example.org", "hi", "refund")))
        # over 50.00 a human must approve: the call waits, the operator approves it
        outcomes.record("approved", attempt(lambda: issue_refund("c-1001", 25000)))
        operator.revoke(grant.accessor)
        outcomes.record("revoked", attempt(lambda: issue_refund("c-1001", 100)))
    operator.close()
    outcomes.record("approvals", str(len(operator.approved)))
    return outcomes.steps


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])
