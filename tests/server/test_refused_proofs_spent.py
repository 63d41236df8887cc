"""A proof that was verified is spent, whatever the answer: a call refused after its
proof's check but before the decision's write (a tool outside the grant's scope, an
agent not active) wrote its refusal without claiming the proof's nonce, and the proof
binds the method, the URL and the grant, not the call: whoever captured the refused
request (a log of the enforcement point, a proxy) could spend its proof on a call the
grant allows, within the proof's minute. ``POST /v1/grants/check`` the same."""

from __future__ import annotations

import pytest

from proctor.audit import EventFilter, search_events

from .conftest import SUPPORT, TARGET, Api

pytestmark = pytest.mark.anyio

SEARCH = [{"tool": "kb/search_articles"}]
CALL = {"tool": "kb/search_articles", "args": {"query": "q"}}
OUTSIDE = {"tool": "kb/delete_articles", "args": {"query": "q"}}


async def test_a_proof_spent_on_a_call_outside_the_scope_is_not_spent_again(
        agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, SEARCH)
    proof = api.call_proof(SUPPORT, grant["token"])
    refused = await api.decide(SUPPORT, grant, proof, OUTSIDE)
    assert (refused["decision"], refused["code"]) == ("deny", "grant_out_of_scope")
    replayed = await api.decide(SUPPORT, grant, proof, CALL)  # it was allowed
    assert (replayed["decision"], replayed["code"]) == ("deny", "proof_replayed")
    # the first refusal is the agent's (it proved the key); the replay may be anyone's
    events = {e.event["id"]: e.event for e in search_events(
        api.runtime.store, EventFilter(), newest_first=False, limit=500)}
    first, second = events[refused["event_id"]], events[replayed["event_id"]]
    assert (first["actor"]["type"], first["actor"]["id"]) == ("agent", SUPPORT)
    assert first["detail"]["code"] == "grant_out_of_scope"
    assert (second["actor"]["type"], second["actor"]["id"]) == ("system", "unauthenticated")
    assert second["detail"]["code"] == "proof_replayed"
    # a fresh proof is the agent's next call
    allowed = await api.decide(SUPPORT, grant, api.call_proof(SUPPORT, grant["token"]), CALL)
    assert allowed["decision"] == "allow", allowed


async def test_a_proof_a_check_found_outside_the_scope_is_spent(agents: Api) -> None:
    api = agents
    grant = await api.grant(SUPPORT, SEARCH)
    proof = api.call_proof(SUPPORT, grant["token"])
    checked = await api.client.post("/v1/grants/check", headers=api.agent(SUPPORT), json={
        "token": grant["token"], "proof": proof, "tool": OUTSIDE["tool"],
        "args": OUTSIDE["args"], "target": TARGET})
    assert (checked.json()["valid"], checked.json()["code"]) == (False, "grant_out_of_scope")
    replayed = await api.decide(SUPPORT, grant, proof, CALL)
    assert (replayed["decision"], replayed["code"]) == ("deny", "proof_replayed")

