"""An agent's NUL (U+0000) in a tool name or an argument, through the HTTP gateway:
the call gets its answer and its audit event, on both databases (PostgreSQL refused the
character, so the event was lost and the answer went out without it), and the chain
still verifies."""

from __future__ import annotations

import anyio
import pytest

from proctor.audit import EventFilter, search_events, verify_store
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import http_gateway
from tests.gateway.test_http_direct import answers, call, wires

pytestmark = pytest.mark.anyio


async def test_a_nul_in_a_tool_name_or_an_argument_is_answered_and_audited(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, wires(
                deployment, public, grant) as [wire]:
            unknown = answers(await wire.post(call(1, "no\x00such", {})))
            assert unknown[0]["error"]["data"]["reason"] == "tool_unknown"
            invalid = answers(await wire.post(call(2, "echo", {"text": 5, "k\x00": "v\x00"})))
            assert invalid[0]["error"]["data"]["reason"] == "arguments_invalid"
            served = answers(await wire.post(call(3, "echo", {"text": "a\x00b"})))
            assert "result" in served[0]
    events = search_events(deployment.runtime.store, EventFilter(task=grant.claims.task_id),
                           newest_first=False, limit=100)
    rejected = [e.event for e in events if e.event["action"] == "gateway.reject"]
    assert [(e["target"], e["detail"]["code"]) for e in rejected] == [
        ("test/no\\u0000such", "tool_unknown"), ("test/echo", "arguments_invalid")]
    assert any(e.event["action"] == "tool:test/echo" and e.event["outcome"] == "allowed"
               for e in events)
    report = verify_store(deployment.runtime.store,
                          deployment.runtime.keyring.checkpoint_verifiers())
    assert report.is_valid, report.problem
