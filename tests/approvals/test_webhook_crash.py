"""The approval webhook survives a crash: ``proctor serve`` killed (SIGKILL) in the middle
of a delivery, started again, and every approval request still reaches the receiver, at
least once and in the order the requests were made."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from examples.frameworks.operator import OWNER, Operator

from proctor.client import ProctorClient
from tests.server.test_serve import STARTUP_SECONDS, Served, env

from .receiver import receiver
from .test_webhook import SECRET, announced

__all__ = ["env"]

pytestmark = pytest.mark.slow

REFUND = [{"tool": "crm/issue_refund", "args": {"amount_cents": {"max": 50000}}}]
# the killed server's lease holds the restarted one up until it lapses: 2 s here (the
# shortest a 1 s timeout allows), 10 s by default; the wait is the same, shorter
LEASE = "timeout_seconds = 1\nlease_seconds = 2\n"


def first_arrivals(ids: list[str]) -> list[str]:
    seen: list[str] = []
    for found in ids:
        if found not in seen:
            seen.append(found)
    return seen


def test_a_server_killed_mid_delivery_delivers_every_request_after_its_restart(
        env: dict[str, str]) -> None:
    home = Path(env["PROCTOR_HOME"])
    home.mkdir(parents=True)
    (home / "webhook.secret").write_bytes(SECRET)
    release = threading.Event()
    with receiver(hold_first=release) as hook:
        (home / "webhook.toml").write_text(
            f'url = "{hook.url}"\nsecret_file = "webhook.secret"\nmax_backoff_seconds = 2\n'
            + LEASE)
        server = Served(env)
        token = server.line_after("admin token for local-admin")
        server.wait_ready()
        operator = Operator(server.url, token)
        agent_id, key = operator.register_agent("support")
        made: list[str] = []

        def ask(base: str, amount_cents: int) -> None:
            with ProctorClient(base, agent_id, key) as client:
                task = client.start_task("refund a lost parcel", on_behalf_of=OWNER)
                grant = client.issue_grant(task, REFUND)
                verdict = client.decide(grant, "crm/issue_refund",
                                        {"customer_id": "c-1001", "amount_cents": amount_cents})
                assert verdict.approval is not None, verdict
                made.append(verdict.approval.id)

        try:
            ask(server.url, 25_000)
            ask(server.url, 26_000)
            hook.wait_for(1, timeout=STARTUP_SECONDS)  # the first delivery, held
        finally:
            server.process.kill()  # mid-delivery: its answer never comes
            server.stop()
        release.set()
        operator.close()

        again = Served(env)
        try:
            again.wait_ready()
            ask(again.url, 27_000)
            # the killed server's lease lapses (2 to 3 s), then the new one resumes
            while first_arrivals(announced(hook.received)) != made:
                seen = len(hook.received)
                hook.wait_for(seen + 1, timeout=STARTUP_SECONDS)
        finally:
            again.stop()
    assert first_arrivals(announced(hook.received)) == made
    assert len(made) == 3
    # the request being delivered when the server died was sent again
    assert len(hook.received) >= 4
