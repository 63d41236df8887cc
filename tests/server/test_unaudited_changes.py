"""A change through the API whose audit event cannot be written is never answered as a
success: what gives access is undone (or, made with its event in one transaction, not
made), what takes it away stands; both are a 503, with
``Retry-After`` (the log may take events again)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import text

from proctor.audit import verify_store
from proctor.identity import TrustState
from proctor.store import Store
from tests.identity.factories import manifest, public_jwk
from tests.server.conftest import CODER, OWNER, SUPPORT, Api

pytestmark = pytest.mark.anyio


@contextmanager
def audit_down(store: Store) -> Iterator[None]:
    """No append can be chained: the head row is gone while events exist. Put back."""
    with store.engine.begin() as conn:
        head = conn.execute(text("SELECT seq, hash FROM audit_head")).one()
        assert head.seq > 0
        conn.execute(text("DELETE FROM audit_head"))
    yield
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :s, :h)"),
                     {"s": head.seq, "h": head.hash})


async def test_a_change_that_cannot_be_audited_is_a_503_and_access_it_gave_is_undone(
    api: Api,
) -> None:
    await api.register(SUPPORT, "support-agents")  # audited: the log has an event
    before = len(api.events())
    with audit_down(api.runtime.store):
        registered = await api.client.post("/v1/agents", headers=api.admin, json={
            "id": CODER, "owner": OWNER, "groups": ["coding-agents"],
            "proof": {"method": "own_key", "jwk": public_jwk(ECKey.generate_key("P-256"))},
            "manifest": manifest().as_json()})
        suspended = await api.client.post(f"/v1/agents/{SUPPORT}/suspend", headers=api.admin,
                                          json={"reason": "looks odd"})
    answers = [(r.status_code, r.json().get("code")) for r in (registered, suspended)]
    assert answers == [(503, "audit_unavailable")] * 2
    assert [r.headers.get("retry-after") for r in (registered, suspended)] == ["1", "1"]
    # a registration gives access: made with its event, or not at all (it used to be
    # made, then the agent suspended); a suspension takes it away: it stands
    assert registered.json()["detail"].endswith("could not be audited, so it was not made")
    assert suspended.json()["detail"].endswith("took effect but could not be audited")
    registry = api.runtime.registry
    assert registry.find(CODER) is None
    assert registry.get(SUPPORT).trust_state is TrustState.SUSPENDED
    assert len(api.events()) == before
    report = verify_store(api.runtime.store, api.runtime.keyring.checkpoint_verifiers())
    assert report.problem is None
