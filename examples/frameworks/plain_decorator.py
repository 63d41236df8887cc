"""Any Python function behind proctor: ``@guarded("server/tool")``.

Run against a running ``proctor serve``::

    PROCTOR_URL=http://127.0.0.1:8600 PROCTOR_ADMIN_TOKEN=ptk_… \\
        python -m examples.frameworks.plain_decorator
"""

from __future__ import annotations

import os
from collections.abc import Callable

from examples.frameworks.support import support_agent
from proctor.client import CallRefusedError, Guard, guarded

__all__ = ["run"]


def attempt(call: Callable[[], object]) -> str:
    """``allow`` if the function ran, else proctor's code for the refusal."""
    try:
        call()
    except CallRefusedError as refused:
        return refused.code
    return "allow"


def run(base_url: str, admin_token: str) -> dict[str, str]:
    with support_agent(base_url, admin_token) as support:
        guard = Guard(support.client, support.grant)

        @guarded("crm/issue_refund", guard=guard)
        def issue_refund(customer_id: str, amount_cents: int) -> str:
            return f"refunded {amount_cents} cents to {customer_id}"

        @guarded("email/send_email", guard=guard)
        def send_email(to: str, subject: str, body: str) -> str:
            return f"sent to {to}"

        support.outcomes.record("allowed", attempt(lambda: issue_refund("c-1001", 2500)))
        support.outcomes.record("denied",
                            attempt(lambda: send_email("a@example.org", "hi", "refund")))
        # over 50.00 a human must approve: the call waits, the operator approves it
        support.outcomes.record("approved", attempt(lambda: issue_refund("c-1001", 25000)))
        support.operator.revoke(support.grant.accessor)
        support.outcomes.record("revoked", attempt(lambda: issue_refund("c-1001", 100)))
    return support.outcomes.steps


if __name__ == "__main__":
    run(os.environ.get("PROCTOR_URL", "http://127.0.0.1:8600"), os.environ["PROCTOR_ADMIN_TOKEN"])
