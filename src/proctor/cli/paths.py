"""``proctor paths``: what an agent can reach, and who can reach a tool or a connector.

Computed by Cedar's partial evaluation of the active policies (see
:mod:`proctor.oversight.paths`), with the live grants that name each tool.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from proctor.cli.output import console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError

__all__ = ["paths"]


def paths(
    agent: Annotated[str | None, typer.Option(
        "--agent", help="What this agent (a name or SPIFFE ID) can reach.")] = None,
    to: Annotated[str | None, typer.Option(
        "--to", help="Who can reach this tool (server/tool, or server/*).")] = None,
    connector: Annotated[str | None, typer.Option(
        "--connector", help="Who can reach this connector's tools.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")
                       ] = False,
) -> None:
    """Access paths: agent → live grants (and delegations) → tool → connector → data
    sensitivity, each with the policies that allow it and whether it needs an approval.
    A path is `always` (whatever the call) or `conditional` (the call's arguments and
    context decide); a pair with no path is left out."""
    from proctor.identity import agent_id_for
    from proctor.oversight.paths import access_paths, known_agents, live_grants
    from proctor.runtime import open_runtime

    if agent is None and to is None and connector is None:
        fail("give --agent, --to or --connector", code="request_invalid", as_json=as_json)
    try:
        settings = load_settings()
        wanted = agent_id_for(agent, settings.trust_domain).id if agent else None
        runtime = open_runtime(settings)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        runtime.tools.teach(runtime.engine)  # tools the gateways discovered
        found = access_paths(runtime.engine, known_agents(runtime.registry, settings.policy_dir),
                             grants_live=live_grants(runtime.store, now=runtime.clock.now()),
                             agent=wanted, tool=to, connector=connector)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()
    if as_json:
        print_json({"paths": [p.as_json() for p in found]})
        return
    if not found:
        console.print("no access paths")
        return
    table = Table("agent", "tool", "connector", "sensitivity", "reach", "policies",
                  "approval", "live grants")
    for path in found:
        grants = ", ".join(g.grant_id + (f" (from {g.delegated_by})" if g.delegated_by else "")
                           for g in path.grants)
        table.add_row(path.agent_id, path.tool.tool_id, path.connector or "-",
                      path.tool.sensitivity.name.lower(), path.reach,
                      ", ".join(path.policy_ids), "yes" if path.needs_approval else "no",
                      grants or "-")
    console.print(table)
