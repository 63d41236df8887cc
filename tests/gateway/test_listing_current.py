"""A gateway's listing sees agents as they are now, whichever process registered them."""

from __future__ import annotations

import anyio
import pytest
from joserfc.jwk import ECKey

from proctor.gateway.visibility import Visibility
from proctor.grants import GrantClaims, GrantScope
from proctor.identity import OwnKeyProof
from proctor.runtime import open_runtime
from tests.identity.factories import manifest

from .conftest import OWNER, Deployment

REVIEWER = "spiffe://acme.example/agent/reviewer"


def _claims(agent: str) -> GrantClaims:
    return GrantClaims(grant_id="grant_x", agent_id=agent, task_id="task_x", issuer="i",
                       audience="proctor", issued_at=0, not_before=0, expires_at=1,
                       scope=GrantScope.from_json({"tools": [{"tool": "git/*"}]}),
                       key_thumbprint="k", ancestors=(), actor_chain=())


@pytest.mark.anyio
async def test_an_agent_registered_by_another_process_is_listed_with_its_groups(
        deployment: Deployment) -> None:
    gateway_side = deployment.runtime  # the gateway's process
    visibility = Visibility(gateway_side.engine)  # what its listing evaluates
    claims = _claims(REVIEWER)
    assert not visibility.shows(claims, "git/git_log")  # not registered yet

    server_side = open_runtime(deployment.settings)  # `proctor serve`, another process
    try:
        jwk = ECKey.generate_key("P-256", private=True)
        server_side.registry.register(
            REVIEWER, owner=OWNER, groups=["coding-agents"],
            proof=OwnKeyProof(dict(jwk.as_dict(private=False))), manifest=manifest())
    finally:
        server_side.close()

    with anyio.fail_after(10):
        while True:
            gateway_side.enforcer.catch_up()  # as list_tools does first
            if visibility.shows(claims, "git/git_log"):
                break
            await anyio.sleep(0.01)  # PostgreSQL: until the notification arrives
