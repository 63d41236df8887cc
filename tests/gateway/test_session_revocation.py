"""A session closed for revocation or expiry fails the calls bound to it, even the held
ones; no session, nor upstream, starts or lives on under a revoked grant."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from proctor.clock import FrozenClock, SystemClock
from proctor.errors import GrantError
from proctor.gateway import Gateway, GatewayConfig, GatewaySession, RevocationWatch
from tests.gateway.conftest import WAIT, Deployment
from tests.gateway.in_process import (
    POLL,
    Gate,
    agent,
    echo_through_gate,
    gateway_on,
    session_of,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("ending", ["revoked", "expired"])
async def test_a_call_bound_to_its_session_still_fails_when_its_grant_ends_meanwhile(
        deployment: Deployment, tmp_path: Path, ending: str) -> None:
    grant = deployment.grant(ttl=600)
    clock = FrozenClock(SystemClock().now())
    gate = Gate(tmp_path)
    ended: list[GatewaySession] = []
    with anyio.fail_after(WAIT):
        async with gateway_on(deployment, clock, gate) as (public, gateway), agent(
                f"{public}/mcp/test", grant, deployment, clock) as client:

            async def end_grant() -> None:
                session = session_of(gateway, grant)
                ended.append(session)
                if ending == "revoked":
                    await anyio.to_thread.run_sync(gateway.grants.revoke, grant.accessor,
                                                   "incident 12")
                else:
                    clock.advance(seconds=600 + POLL)
                await session.closed.wait()

            result = await echo_through_gate(client, gate, "too late", end_grant)
    # the grant's MCP session is terminated under the call: it fails without an answer
    assert isinstance(result, MCPError)
    assert ended[0].close_reason == {"revoked": "grant revoked (incident 12)",
                                     "expired": "grant expired"}[ending]


async def test_an_upstream_that_connects_after_its_session_closed_ends_with_the_session(
        deployment: Deployment, tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    config = GatewayConfig(upstreams={"test": gate.upstream()}, connect_timeout_seconds=WAIT)
    gateway = Gateway.on(deployment.runtime, config)
    claims = deployment.runtime.grants.inspect(deployment.grant().token).claims
    failure: list[MCPError] = []

    async def connect(session: GatewaySession) -> None:
        try:
            await session.upstream("test")
        except MCPError as exc:
            failure.append(exc)

    with anyio.fail_after(WAIT):
        # the task group ends only once the session's run (and every upstream) has ended
        async with anyio.create_task_group() as tasks:
            session = await gateway.open_session(claims, tasks)
            async with anyio.create_task_group() as calls:
                calls.start_soon(connect, session)
                async with gate.upstream_waiting():
                    session.close("grant revoked (incident 12)")
    assert [e.error.data["reason"] for e in failure] == ["session_closed"]
    assert "grant revoked (incident 12)" in failure[0].error.message


async def test_no_session_opens_for_a_grant_revoked_after_its_request_was_checked(
        deployment: Deployment) -> None:
    grant = deployment.grant()
    gateway = Gateway.on(deployment.runtime, GatewayConfig())
    claims = deployment.runtime.grants.inspect(grant.token).claims  # the HTTP gate passes
    deployment.runtime.grants.revoke(grant.accessor, "incident 12")
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            with pytest.raises(GrantError) as refused:
                await gateway.open_session(claims, tasks)
    assert refused.value.code == "grant_revoked"
    assert gateway.sessions == {}
    assert [n.kind for n in deployment.runtime.grants.tree(grant.claims.task_id)
            if n.kind == "session"] == []


async def test_a_session_closes_when_the_revocation_of_its_grant_is_heard_alone(
        deployment: Deployment) -> None:
    # A session opened as its grant was revoked (the two transactions interleaved) is not
    # in the revoked subtree: the revocation of its grant's line must end it all the same.
    grant = deployment.grant()
    gateway = Gateway.on(deployment.runtime, GatewayConfig())
    claims = deployment.runtime.grants.inspect(grant.token).claims
    watch = RevocationWatch(gateway.sessions, leases=gateway.grants.leases,
                            clock=gateway.clock, poll_seconds=3600)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tasks:
            session = await gateway.open_session(claims, tasks)
            await tasks.start(watch.run)
            watch.heard([grant.claims.grant_id], "incident 12")
            await session.closed.wait()
            tasks.cancel_scope.cancel()
    assert session.close_reason == "grant revoked (incident 12)"



async def test_a_live_session_closes_when_another_process_revokes_its_grant(
        deployment: Deployment) -> None:
    # The other process marks the grant (a root) alone in its transaction: PostgreSQL's
    # NOTIFY carries it to this process's watch (no polling: an hour apart); on SQLite
    # the watch's poll of the session's whole line finds it.
    from tests.enforcement.test_cross_process import Other

    grant = deployment.grant()
    gateway = Gateway.on(deployment.runtime, GatewayConfig())
    claims = deployment.runtime.grants.inspect(grant.token).claims
    is_pg = deployment.runtime.store.backend == "postgresql"
    watch = RevocationWatch(gateway.sessions, leases=gateway.grants.leases,
                            clock=gateway.clock, poll_seconds=3600 if is_pg else POLL,
                            store=deployment.runtime.store)
    with anyio.fail_after(WAIT * 4):
        async with anyio.create_task_group() as tasks:
            session = await gateway.open_session(claims, tasks)
            await tasks.start(watch.run)
            other = Other(deployment.runtime, "revoke", {"grant": grant.accessor})
            await anyio.to_thread.run_sync(other.finish)
            await session.closed.wait()
            tasks.cancel_scope.cancel()
    assert session.close_reason == ("grant revoked (revoked by another process)" if is_pg
                                    else "grant revoked")  # a poll reads no reason
