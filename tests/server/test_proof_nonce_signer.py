"""A proof's nonce is kept under the key that signed it: another agent cannot spend it.

The nonce (``jti``) is the client's choice and guessable (proctor's own client begins it
with a count). It used to be kept under its time and nonce alone, so an agent signing a
proof of its own, with its own grant, under the victim's time and nonce spent the
victim's proof before it was sent: the victim's genuine call was then refused
``proof_replayed``, audited as an unauthenticated replay.
"""

from __future__ import annotations

from typing import Any

import pytest

from proctor.grants.proofs import make_proof

from .conftest import SUPPORT, TARGET, Api

pytestmark = pytest.mark.anyio

SEARCH = [{"tool": "kb/search_articles"}]
CALL = {"tool": "kb/search_articles", "args": {"query": "refund policy"}}
OUTSIDE = {"tool": "kb/delete_article", "args": {"id": "a-1"}}
NONCE = "00000001-guessed-nonce"
OTHER = "spiffe://acme.example/agent/support-2"  # another agent, as able as the first


@pytest.mark.parametrize("call_b", [CALL, OUTSIDE], ids=["allowed", "refused"])
async def test_another_agents_proof_with_the_same_time_and_nonce_spends_only_its_own(
        agents: Api, call_b: dict[str, Any]) -> None:
    api = agents
    await api.register(OTHER, "support-agents")
    grant_a = await api.grant(SUPPORT, SEARCH)
    grant_b = await api.grant(OTHER, SEARCH)
    now = api.clock.now()
    proof_a = make_proof(api.private_key(SUPPORT), grant_a["token"], method="tools/call",
                         target=TARGET, now=now, nonce=NONCE)
    proof_b = make_proof(api.private_key(OTHER), grant_b["token"], method="tools/call",
                         target=TARGET, now=now, nonce=NONCE)
    # B's own call, allowed or refused after its proof verified (its nonce spent either way)
    first = await api.decide(OTHER, grant_b, proof_b, call_b)
    assert first["decision"] == ("allow" if call_b is CALL else "deny"), first
    assert first.get("code") != "proof_replayed", first
    # A's proof, never sent before, under the same time and nonce: A's own
    answer = await api.decide(SUPPORT, grant_a, proof_a, CALL)
    assert answer["decision"] == "allow", answer
    # each proof is still single use
    assert (await api.decide(SUPPORT, grant_a, proof_a, CALL))["code"] == "proof_replayed"
    assert (await api.decide(OTHER, grant_b, proof_b, CALL))["code"] == "proof_replayed"
