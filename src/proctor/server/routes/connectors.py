"""Connectors: the inventory of MCP servers, SaaS and OAuth apps, with who can reach
each now, its last use and its findings (see :mod:`proctor.oversight.inventory`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from proctor.oversight.inventory import Connector, ConnectorReport, Inventory
from proctor.oversight.paths import known_agents, live_grants
from proctor.server.bodies import RequestBody
from proctor.server.control import service
from proctor.server.deps import Call
from proctor.server.problems import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["connectors"])

ConnectorId = Annotated[str, Path(min_length=1, max_length=64)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]],
                  Field(max_length=50)]


class NewConnector(RequestBody):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Annotated[str, Field(max_length=16)]
    name: Text
    owner: Text | None = None
    provider: Annotated[str, Field(max_length=64)] | None = None
    client_id: Text | None = None
    scopes: Names = Field(default_factory=list)
    redirect_uris: Names = Field(default_factory=list)
    credential: Text | None = None
    secrets: Names = Field(default_factory=list)
    servers: Names = Field(default_factory=list)


class ConnectorView(BaseModel):
    id: str
    kind: str
    name: str
    owner: str | None
    provider: str | None
    oauth: dict[str, Any] | None
    secrets: list[str]
    servers: list[str]
    source: str
    created_at: datetime | None
    retired_at: datetime | None
    retired_by: str | None
    last_used_at: datetime | None = None
    reachable_by: list[dict[str, Any]] = []
    findings: list[dict[str, str]] = []


class ConnectorList(BaseModel):
    connectors: list[ConnectorView]


def _report(call: Call, connector: Connector) -> ConnectorReport:
    runtime = call.runtime
    return Inventory(runtime.store, runtime.clock).report(
        connector, runtime.engine, known_agents(runtime.registry, runtime.settings.policy_dir),
        live_grants(runtime.store, now=runtime.clock.now()))


@router.get("/v1/connectors", responses=problem_responses())
def list_connectors(call: Call) -> ConnectorList:
    """Every connector in service, with who can reach it, its last use and findings."""
    call.require("api:connector.list", service("connectors"))
    inventory = Inventory(call.runtime.store, call.runtime.clock)
    return ConnectorList(connectors=[ConnectorView(**_report(call, c).as_json())
                                     for c in inventory.list()])


@router.get("/v1/connectors/{connector_id}", responses=problem_responses("not_found"))
def read_connector(connector_id: ConnectorId, call: Call) -> ConnectorView:
    """One connector (retired ones too), with who can reach it and its findings."""
    call.require("api:connector.read", service("connectors"))
    connector = Inventory(call.runtime.store, call.runtime.clock).get(connector_id)
    return ConnectorView(**_report(call, connector).as_json())


@router.post("/v1/connectors", status_code=201, responses=problem_responses(
    "request_invalid"))
def add_connector(body: NewConnector, call: Call) -> ConnectorView:
    """Record a connector; refused if its id is taken or a field is not valid."""
    call.require("api:connector.add", service("connectors"))
    inventory = Inventory(call.runtime.store, call.runtime.clock)
    # with its event, in one transaction (an outage: not added, and 503)
    added = inventory.add_with_event(Connector(
        id=body.id, kind=body.kind, name=body.name, owner=body.owner, provider=body.provider,
        client_id=body.client_id, scopes=tuple(body.scopes),
        redirect_uris=tuple(body.redirect_uris), credential=body.credential,
        secrets=tuple(body.secrets), servers=tuple(body.servers)),
        call.runtime.audit, call.principal.actor, source=call.source)
    return ConnectorView(**added.as_json())


@router.post("/v1/connectors/{connector_id}/retire",
             responses=problem_responses("not_found", "request_invalid"))
def retire_connector(connector_id: ConnectorId, call: Call) -> ConnectorView:
    """Take a connector out of the inventory (it stays readable)."""
    call.require("api:connector.retire", service("connectors"))
    # with its event, in one transaction (an outage: retired all the same, and 503)
    retired = Inventory(call.runtime.store, call.runtime.clock).retire_with_event(
        connector_id, call.runtime.audit, call.principal.actor, source=call.source)
    return ConnectorView(**retired.as_json())
