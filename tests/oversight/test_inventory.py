"""The inventory of connectors: records, who reaches them, and findings with reasons."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proctor.clock import FrozenClock
from proctor.errors import NotFoundError, RequestError
from proctor.oversight.inventory import Connector, Inventory
from proctor.policy import PolicyEngine, load_bundle
from proctor.store import Store, open_store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def setup(database_url: str) -> Iterator[tuple[Inventory, Store, FrozenClock]]:
    store = open_store(database_url)
    clock = FrozenClock(NOW)
    yield Inventory(store, clock), store, clock
    store.close()


def _engine() -> tuple[PolicyEngine, list[str]]:
    bundle = load_bundle(EXAMPLES)
    engine = PolicyEngine(bundle.catalog, bundle.principals)
    engine.activate(engine.compile(bundle.sources))
    agents = [p["uid"]["id"] for p in bundle.principals if p["uid"]["type"] == "Agent"]
    return engine, agents


SALESFORCE = Connector(id="salesforce", kind="oauth_app", name="Salesforce CRM",
                       owner="alice@acme.example", provider="salesforce",
                       client_id="3MVG9-client", scopes=("api", "refresh_token"),
                       redirect_uris=("https://proctor.acme.example/oauth/callback",),
                       credential="secret store: crm-token", secrets=("crm-token",),
                       servers=("crm",))


def test_a_connector_is_recorded_listed_and_retired(
        setup: tuple[Inventory, Store, FrozenClock]) -> None:
    inventory, _, _ = setup
    added = inventory.add(SALESFORCE)
    assert (added.scopes, added.credential, added.created_at) == (
        ("api", "refresh_token"), "secret store: crm-token", NOW)
    with pytest.raises(RequestError, match="already exists"):
        inventory.add(SALESFORCE)
    assert [c.id for c in inventory.list()] == ["salesforce"]
    retired = inventory.retire("salesforce", by="erin@acme.example")
    assert retired.is_retired and inventory.list() == []
    assert [c.id for c in inventory.list(include_retired=True)] == ["salesforce"]
    with pytest.raises(RequestError, match="already retired"):
        inventory.retire("salesforce", by="erin@acme.example")
    with pytest.raises(NotFoundError):
        inventory.get("nothing")


@pytest.mark.parametrize(("field", "value", "words"), [
    ("id", "Bad Id", "lowercase"), ("kind", "robot", "one of"),
    ("redirect_uris", ("http://evil.example/cb",), "https"), ("name", " ", "name"),
])
def test_a_record_that_is_not_valid_is_refused(
        setup: tuple[Inventory, Store, FrozenClock], field: str, value: Any,
        words: str) -> None:
    import dataclasses

    inventory, _, _ = setup
    with pytest.raises(RequestError, match=words):
        inventory.add(dataclasses.replace(SALESFORCE, **{field: value}))
    assert inventory.list() == []


def test_the_report_names_who_reaches_it_and_each_finding_with_its_reason(
        setup: tuple[Inventory, Store, FrozenClock]) -> None:
    inventory, _, clock = setup
    engine, agents = _engine()
    inventory.add(SALESFORCE)
    report = inventory.report(inventory.get("salesforce"), engine, agents, [])
    assert "spiffe://acme.example/agent/support" in report.agents
    assert {p.tool.tool_id for p in report.paths} >= {"crm/lookup_customer"}
    assert report.last_used_at is None
    assert [f.code for f in report.findings] == ["over_broad_scopes"]
    assert "refresh_token" in report.findings[0].reason

    careless = Connector(id="gh", kind="oauth_app", name="GitHub app", provider="github",
                         scopes=("repo", "read:user"))
    inventory.add(careless)
    inventory.note_plaintext("gh")
    clock.advance(seconds=timedelta(days=31).total_seconds())
    found = inventory.report(inventory.get("gh"), engine, agents, []).findings
    assert [f.code for f in found] == ["no_owner", "unused", "over_broad_scopes",
                                       "plaintext_secret"]
    assert "repo" in found[2].reason and "read:user" not in found[2].reason
