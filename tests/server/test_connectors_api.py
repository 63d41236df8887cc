"""Connectors through the API: recorded, read with who reaches them and their findings,
retired; an auditor reads and changes nothing; every change audited."""

from __future__ import annotations

import pytest

from .conftest import SUPPORT, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio

SALESFORCE = {"id": "salesforce", "kind": "oauth_app", "name": "Salesforce CRM",
              "provider": "salesforce", "client_id": "3MVG9", "scopes": ["api", "full"],
              "redirect_uris": ["https://proctor.acme.example/cb"], "servers": ["crm"],
              "credential": "secret store: crm-token"}


async def test_a_connector_is_recorded_read_with_its_reach_and_findings_and_retired(
        api: Api) -> None:
    await api.register(SUPPORT, "support-agents")
    added = await api.client.post("/v1/connectors", headers=api.admin, json=SALESFORCE)
    assert added.status_code == 201, added.text
    one = await api.client.get("/v1/connectors/salesforce", headers=api.admin)
    assert one.status_code == 200
    body = one.json()
    assert SUPPORT in {r["agent"] for r in body["reachable_by"]}
    assert {f["code"] for f in body["findings"]} == {"no_owner", "over_broad_scopes"}
    listed = await api.client.get("/v1/connectors", headers=api.admin)
    assert [c["id"] for c in listed.json()["connectors"]] == ["salesforce"]
    again = await api.client.post("/v1/connectors", headers=api.admin, json=SALESFORCE)
    assert_problem(again, 422, "request_invalid")
    retired = await api.client.post("/v1/connectors/salesforce/retire", headers=api.admin)
    assert retired.status_code == 200 and retired.json()["retired_at"]
    assert (await api.client.get("/v1/connectors", headers=api.admin)).json() == {
        "connectors": []}
    actions = {(e.event["action"], e.event["target"]) for e in api.events()}
    assert {("connector.add", "Connector::salesforce"),
            ("connector.retire", "Connector::salesforce")} <= actions


async def test_an_auditor_reads_the_inventory_and_cannot_change_it(api: Api) -> None:
    auditor = api.human("ivy@acme.example", "auditor")
    assert (await api.client.get("/v1/connectors", headers=auditor)).status_code == 200
    refused = await api.client.post("/v1/connectors", headers=auditor, json=SALESFORCE)
    assert_problem(refused, 403, "forbidden")
    unknown = await api.client.get("/v1/connectors/nothing", headers=auditor)
    assert_problem(unknown, 404, "not_found")
