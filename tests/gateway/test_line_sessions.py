"""A live MCP session under a delegated grant, when an agent of the grant's line drifts.

The coder hands its grant of ``test/echo`` on to a helper, which opens a session through
the gateway. The coder's manifest drifts: the session stays open (a drift revokes
nothing, as when the holder itself drifts), and each call in it is decided again and
refused ``delegator_not_trusted``; once a human has reviewed the coder, the same session's
calls are allowed again.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from proctor.clock import SystemClock
from proctor.gateway import GrantAuth
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.identity import OwnKeyProof
from proctor.runtime import issuer_for
from tests.gateway.conftest import CODER, OWNER, WAIT, Deployment
from tests.gateway.in_process import http_gateway
from tests.identity.factories import manifest, public_jwk

pytestmark = pytest.mark.anyio

HELPER = "spiffe://acme.example/agent/helper"
ECHO = [{"tool": "test/echo"}]


def _handed_to_helper(deployment: Deployment) -> tuple[IssuedGrant, ec.EllipticCurvePrivateKey]:
    runtime = deployment.runtime
    jwk = ECKey.generate_key("P-256", private=True)
    runtime.registry.register(HELPER, owner=OWNER, groups=["coding-agents"],
                              proof=OwnKeyProof(public_jwk(jwk)), manifest=manifest())
    key = jwk.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    runtime.enforcer.refresh_principals()
    held = deployment.grant(ECHO)
    proof = make_proof(deployment.key, held.token, method=EXCHANGE_METHOD,
                       target=issuer_for(runtime.settings), now=runtime.clock.now())
    child = runtime.grants.exchange(held.token, proof, to_agent=HELPER,
                                    scope=GrantScope.from_json({"tools": ECHO}),
                                    ttl_seconds=300)
    assert isinstance(child, IssuedGrant)
    return child, key


async def test_a_drifted_delegator_re_gates_each_call_of_a_live_session(
        deployment: Deployment) -> None:
    child, key = _handed_to_helper(deployment)
    registry = deployment.runtime.registry
    auth = GrantAuth(child.token, key, SystemClock())
    with anyio.fail_after(WAIT):
        async with http_gateway(deployment) as public, httpx2.AsyncClient(
                auth=auth, timeout=WAIT) as http, \
                streamable_http_client(f"{public}/mcp/test", http_client=http) as (r, w), \
                ClientSession(r, w) as session:
            await session.initialize()
            assert (await session.call_tool("echo", {"text": "one"})).structured_content \
                == {"text": "one", "count": 1}
            await anyio.to_thread.run_sync(lambda: registry.present_manifest(
                CODER, manifest(model_id="some-other-model")))
            with pytest.raises(MCPError, match="delegator_not_trusted"):
                await session.call_tool("echo", {"text": "two"})

            def reviewed_back() -> None:
                registry.present_manifest(CODER, manifest())
                registry.review(CODER, reviewer="erin@acme.example",
                                expected_digest=registry.get(CODER).review_digest)
            await anyio.to_thread.run_sync(reviewed_back)
            # the same session: nothing was closed or revoked
            assert (await session.call_tool("echo", {"text": "three"})).structured_content \
                == {"text": "three", "count": 1}
