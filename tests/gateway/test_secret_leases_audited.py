"""A secret leased to an upstream is the effects of its own ``secret.lease`` event, and
its end (the session's) of a ``secret.release`` event, each in the audit writer's
transaction: which agent's grant had which secret decrypted and handed to which
upstream is in the tamper-evident log, never the value. A lease the log cannot hold is
not taken: the upstream is not started and the agent is told ``upstream_unavailable``.
Through ``proctor mcp wrap`` in process, to the tests' own stdio upstream, on both
databases."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from proctor.audit import iter_events
from proctor.errors import ProctorError
from tests.gateway.conftest import CODER, Deployment, injected_secret
from tests.gateway.in_process import wrapped
from tests.server.test_unaudited_changes import audit_down

pytestmark = pytest.mark.anyio


def _stored(deployment: Deployment) -> str:
    """Every audit event as stored, every column: what the log holds."""
    with deployment.runtime.store.engine.connect() as conn:
        return repr(conn.execute(text("SELECT * FROM audit_events")).all())


async def test_a_secret_leased_to_an_upstream_is_audited_with_its_end_and_never_its_value(
        deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value, config = injected_secret(deployment)
    grant = deployment.grant()
    async with wrapped(deployment, grant, [], config=config, server="test") as client:
        digest = await client.call_tool("env_digest", {"name": "UPSTREAM_TOKEN"})
        assert digest.structured_content == {
            "result": hashlib.sha256(value.encode()).hexdigest()}
    leases = [n for n in deployment.runtime.grants.tree(grant.claims.task_id)
              if n.kind == "secret"]
    assert len(leases) == 1 and leases[0].is_revoked
    events = [e.event for e in iter_events(deployment.runtime.store)
              if e.event["action"].startswith("secret.")]
    assert [e["action"] for e in events] == ["secret.lease", "secret.release"]
    leased, released = events
    assert leased["actor"] == {"type": "system", "id": "proctor-gateway",
                               "on_behalf_of": CODER}
    assert [leased[k] for k in ("target", "outcome", "task", "grant")] == [
        'Secret::"upstream-token"', "leased", grant.claims.task_id, grant.accessor]
    assert leased["detail"] == {
        "agent": CODER, "parent": grant.grant_id, "upstream": "test",
        "lease": leases[0].id,
        "expires_at": datetime.fromtimestamp(grant.claims.expires_at, UTC).isoformat()}
    assert [released[k] for k in ("target", "outcome", "task")] == [
        'Secret::"upstream-token"', "released", grant.claims.task_id]
    assert released["detail"]["leases"] == [leases[0].id]
    assert released["detail"]["secrets"] == ["upstream-token"]
    # the value: in no event, no log line, no record's arguments
    assert value not in _stored(deployment)
    assert value not in json.dumps(events)
    assert value not in caplog.text
    assert all(value not in str(r.args) and value not in r.getMessage()
               for r in caplog.records)


async def test_a_lease_the_log_cannot_hold_is_not_taken_and_the_upstream_not_started(
        deployment: Deployment, tmp_path: Path) -> None:
    started = tmp_path / "started"
    command = [sys.executable, "-c", f"open({str(started)!r}, 'w').close()"]
    value, config = injected_secret(deployment, command)
    grant = deployment.grant()
    before = sum(1 for _ in iter_events(deployment.runtime.store))
    with audit_down(deployment.runtime.store), pytest.raises(ProctorError) as refused:
        async with wrapped(deployment, grant, [], config=config, server="test"):
            pass
    assert refused.value.code == "upstream_unavailable"
    assert "audit_unavailable" in refused.value.message
    assert not started.exists()
    assert [n.kind for n in deployment.runtime.grants.tree(grant.claims.task_id)
            if n.kind == "secret"] == []
    with deployment.runtime.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM secret_leases")).scalar() == 0
    assert sum(1 for _ in iter_events(deployment.runtime.store)) == before
    assert value not in _stored(deployment)


async def test_a_session_ending_while_the_log_is_down_still_ends_its_leases(
        deployment: Deployment, caplog: pytest.LogCaptureFixture) -> None:
    value, config = injected_secret(deployment)
    grant = deployment.grant()
    with ExitStack() as down:
        async with wrapped(deployment, grant, [], config=config, server="test") as client:
            await client.call_tool("env_digest", {"name": "UPSTREAM_TOKEN"})
            down.enter_context(audit_down(deployment.runtime.store))
        # the session has ended, and its leases with it, unaudited (said in the log)
        nodes = [n for n in deployment.runtime.grants.tree(grant.claims.task_id)
                 if n.kind in ("secret", "session")]
        assert sorted(n.kind for n in nodes) == ["secret", "session"]
        assert all(n.is_revoked for n in nodes)
        assert "`secret.release` of `Secret::\"upstream-token\"` could not be audited" in (
            caplog.text)
    assert "secret.release" not in [e.event["action"]
                                    for e in iter_events(deployment.runtime.store)]
    assert value not in caplog.text
