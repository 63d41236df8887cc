"""The support agent every example plays: its grant's scope, its two tools, the calls of
the four steps, and its set-up (registered by the operator, a task for its owner, a
grant) with the blocking client (:func:`support_agent`) or the asynchronous one
(:func:`async_support_agent`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from examples.frameworks.operator import OWNER, Operator, Outcomes
from proctor.client import AsyncProctorClient, Grant, ProctorClient

__all__ = ["EMAIL", "LARGE_REFUND", "SCOPE", "SMALL_REFUND", "Support", "async_support_agent",
           "issue_refund", "issued", "play_steps", "send_email", "support_agent"]

SCOPE: list[dict[str, Any] | str] = [
    {"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}},
    "kb/search_articles",
]
SMALL_REFUND = {"customer_id": "c-1001", "amount_cents": 2500}  # allowed
EMAIL = {"to": "a@example.org", "subject": "refund", "body": "done"}  # outside the scope
LARGE_REFUND = {"customer_id": "c-1001", "amount_cents": 25000}  # a human approves it

issued: list[dict[str, Any]] = []  # the refunds the tools really made


def issue_refund(customer_id: str, amount_cents: int) -> str:
    """Refund a customer, in cents."""
    issued.append({"customer_id": customer_id, "amount_cents": amount_cents})
    return f"refunded {amount_cents} cents to {customer_id}"


def send_email(to: str, subject: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


C = TypeVar("C", ProctorClient, AsyncProctorClient)


@dataclass
class Support(Generic[C]):
    """One run of an example: the operator, the agent's client and grant, and what each
    step showed (``outcomes``; the approvals the operator gave are added at the end)."""

    operator: Operator
    outcomes: Outcomes
    client: C
    grant: Grant


@contextmanager
def support_agent(base_url: str, admin_token: str) -> Iterator[Support[ProctorClient]]:
    """A fresh support agent with a grant of :data:`SCOPE`, on the blocking client."""
    operator, outcomes = Operator(base_url, admin_token), Outcomes()
    try:
        agent_id, key = operator.register_agent("support")
        with ProctorClient(base_url, agent_id, key, approval_timeout_seconds=30,
                           on_approval=operator.approve_when_asked) as client:
            task = client.start_task("refund a lost parcel", on_behalf_of=OWNER)
            yield Support(operator, outcomes, client, client.issue_grant(task, SCOPE))
        outcomes.record("approvals", str(len(operator.approved)))
    finally:
        operator.close()


@asynccontextmanager
async def async_support_agent(base_url: str, admin_token: str
                              ) -> AsyncIterator[Support[AsyncProctorClient]]:
    """:func:`support_agent` on the asynchronous client."""
    operator, outcomes = Operator(base_url, admin_token), Outcomes()
    try:
        agent_id, key = operator.register_agent("support")
        async with AsyncProctorClient(base_url, agent_id, key, approval_timeout_seconds=30,
                                      on_approval=operator.approve_when_asked) as client:
            task = await client.start_task("refund a lost parcel", on_behalf_of=OWNER)
            yield Support(operator, outcomes, client, await client.issue_grant(task, SCOPE))
        outcomes.record("approvals", str(len(operator.approved)))
    finally:
        operator.close()


Attempt = Callable[[str, dict[str, Any]], Awaitable[str]]
"""``(tool, arguments)``: the tool called through the framework; ``allow`` if it ran,
else proctor's code for the refusal."""


async def play_steps(support: Support[Any], attempt: Attempt,
                     denied: tuple[str, dict[str, Any]] = ("send_email", EMAIL)
                     ) -> dict[str, str]:
    """The four steps: a small refund (allowed), ``denied`` (outside the grant's scope),
    a large refund (held until the operator approves it), and a small refund once the
    grant is revoked; what each showed."""
    outcomes = support.outcomes
    outcomes.record("allowed", await attempt("issue_refund", SMALL_REFUND))
    outcomes.record("denied", await attempt(*denied))
    outcomes.record("approved", await attempt("issue_refund", LARGE_REFUND))
    await anyio.to_thread.run_sync(support.operator.revoke, support.grant.accessor)
    outcomes.record("revoked", await attempt("issue_refund", SMALL_REFUND))
    return outcomes.steps
