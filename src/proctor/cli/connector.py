"""``proctor connector``: the inventory of connectors (MCP servers, SaaS, OAuth apps).

``add`` records one (audited as the operator's), ``import`` the upstreams of a
gateway config, ``list`` shows them with their
findings, ``show`` who can reach one now, when it was last used and why it is
flagged, ``retire`` takes one out of the inventory (audited).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from proctor.cli.operator import ByOpt, acting_runtime
from proctor.cli.output import console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError

if TYPE_CHECKING:
    from proctor.oversight.inventory import ConnectorReport
    from proctor.runtime import Runtime

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True,
                  help="The inventory of connectors: MCP servers, SaaS and OAuth apps.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IdArg = Annotated[str, typer.Argument(help="The connector's id, e.g. `salesforce`.")]
Many = Annotated[list[str] | None, typer.Option()]


def _reports(runtime: Runtime, ids: list[str] | None = None,
             include_retired: bool = False) -> list[ConnectorReport]:
    from proctor.oversight.inventory import Inventory
    from proctor.oversight.paths import known_agents, live_grants

    inventory = Inventory(runtime.store, runtime.clock)
    chosen = [inventory.get(i) for i in ids] if ids else inventory.list(
        include_retired=include_retired)
    agents = known_agents(runtime.registry, runtime.settings.policy_dir)
    live = live_grants(runtime.store, now=runtime.clock.now())
    return [inventory.report(c, runtime.engine, agents, live) for c in chosen]


@app.command("add")
def add(
    connector_id: IdArg,
    kind: Annotated[str, typer.Option("--kind", help="mcp_server, saas or oauth_app.")],
    name: Annotated[str, typer.Option("--name", help="What it is, e.g. `Salesforce CRM`.")],
    owner: Annotated[str | None, typer.Option("--owner", help="The accountable human.")] = None,
    provider: Annotated[str | None, typer.Option(
        "--provider", help="github, google, microsoft, slack, salesforce, or another.")] = None,
    client_id: Annotated[str | None, typer.Option("--client-id",
                                                  help="The OAuth app's client id.")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="An OAuth scope it holds (repeat).")] = None,
    redirect_uri: Annotated[list[str] | None, typer.Option(
        "--redirect-uri", help="An OAuth redirect URI (repeat).")] = None,
    credential: Annotated[str | None, typer.Option(
        "--credential", help="Where its credential lives (never the credential).")] = None,
    secret: Annotated[list[str] | None, typer.Option(
        "--secret", help="A secret-store name it uses (repeat).")] = None,
    server: Annotated[list[str] | None, typer.Option(
        "--server", help="An MCP server whose tools it backs (repeat).")] = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Record a connector in the inventory."""
    from proctor.oversight.inventory import Connector, Inventory

    record = Connector(id=connector_id, kind=kind, name=name, owner=owner, provider=provider,
                       client_id=client_id, scopes=tuple(scope or ()),
                       redirect_uris=tuple(redirect_uri or ()), credential=credential,
                       secrets=tuple(secret or ()), servers=tuple(server or ()))
    with acting_runtime(by, as_json) as (runtime, acting):
        inventory = Inventory(runtime.store, runtime.clock)
        added = inventory.add_with_event(record, acting.audit, acting.operator.actor,
                                         source="cli")
    if as_json:
        print_json(added.as_json())
    else:
        console.print(f"connector {added.id} added ({added.kind})", markup=False)


@app.command("import")
def import_config(
    config_file: Annotated[Path, typer.Argument(help="A gateway config (YAML).")],
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Record each upstream of a gateway config as an `mcp_server` connector (its id is
    the upstream's `connector` label, else its name), with the secrets it is given;
    those already recorded are left as they are."""
    from proctor.gateway.config import load_gateway_config, secret_names
    from proctor.oversight.inventory import Connector, Inventory

    try:
        config = load_gateway_config(config_file)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    added: list[str] = []
    with acting_runtime(by, as_json) as (runtime, acting):
        inventory = Inventory(runtime.store, runtime.clock)
        for name, upstream in config.upstreams.items():
            connector_id = upstream.labels.connector or name
            if inventory.find(connector_id) is not None:
                continue
            values = [*upstream.env.values(), *upstream.headers.values()]
            inventory.add_with_event(Connector(
                id=connector_id, kind="mcp_server", name=f"{name} (gateway config)",
                secrets=tuple(sorted({s for v in values for s in secret_names(v)})),
                servers=(name,), source="gateway"), acting.audit, acting.operator.actor,
                source="cli", detail={"source": "gateway", "file": str(config_file)})
            added.append(connector_id)
    if as_json:
        print_json({"registered": added})
    else:
        console.print(f"registered {', '.join(added) or 'nothing new'}", markup=False)


@app.command("list")
def list_connectors(
    include_retired: Annotated[bool, typer.Option("--all", help="Retired ones too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the connectors with who can reach them and their findings."""
    from proctor.runtime import open_runtime

    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        reports = _reports(runtime, include_retired=include_retired)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()
    if as_json:
        print_json({"connectors": [r.as_json() for r in reports]})
        return
    if not reports:
        console.print("no connectors")
        return
    table = Table("connector", "kind", "owner", "reachable by", "last used", "findings")
    for r in reports:
        c = r.connector
        table.add_row(c.id + (" (retired)" if c.is_retired else ""), c.kind, c.owner or "-",
                      str(len(r.agents)) + " agents",
                      r.last_used_at.isoformat(timespec="seconds") if r.last_used_at else "never",
                      ", ".join(f.code for f in r.findings) or "-")
    console.print(table)


@app.command("show")
def show(connector_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show a connector: who can reach it (through which policies and live grants),
    when it was last used, the secrets it uses, and each finding with its reason."""
    from proctor.runtime import open_runtime

    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        [report] = _reports(runtime, [connector_id])
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()
    data = report.as_json()
    if as_json:
        print_json(data)
        return
    c = report.connector
    console.print(f"{c.id}: {c.name} ({c.kind}), owner {c.owner or 'none'}", markup=False)
    if data["oauth"]:
        oauth = data["oauth"]
        console.print(f"oauth: client {oauth['client_id']}, scopes "
                      f"{', '.join(oauth['scopes']) or '-'}, credential in "
                      f"{oauth['credential'] or '?'}", markup=False)
    console.print(f"secrets: {', '.join(c.secrets) or '-'}; last used "
                  f"{report.last_used_at or 'never'}", markup=False)
    for reach in data["reachable_by"]:
        console.print(f"reachable by {reach['agent']}: {', '.join(reach['tools'])} "
                      f"(policies {', '.join(reach['policies'])})", markup=False)
    for finding in report.findings:
        console.print(f"finding {finding.code}: {finding.reason}", markup=False)


@app.command("retire")
def retire(connector_id: IdArg, by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Take a connector out of the inventory (it stays listed with --all)."""
    from proctor.oversight.inventory import Inventory

    with acting_runtime(by, as_json) as (runtime, acting):
        retired = Inventory(runtime.store, runtime.clock).retire_with_event(
            connector_id, acting.audit, acting.operator.actor, source="cli")
    if as_json:
        print_json(retired.as_json())
    else:
        console.print(f"connector {retired.id} retired", markup=False)
