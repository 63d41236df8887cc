"""Tools and access paths: pinned tool definitions with each definition waiting for a
human (a diff, a review that accepts it and a rejection that keeps it denied), and who
can reach what, as a table and as a graph drawn on the server as SVG (no script, no
CDN: the CSP stays strict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from proctor.oversight.paths import AccessPath, access_paths, known_agents, live_grants
from proctor.oversight.pinning import DEFINITION_FIELDS, ToolPins
from proctor.server.console.queries import pending_count
from proctor.server.console.web import ConsoleCall, ConsoleRoute, check_csrf, render
from proctor.server.control import service

__all__ = ["Graph", "layout", "router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_ROW = 30
_COLUMNS = (20, 380, 700)  # agents, tools, connectors and sensitivity
_MAX_PATHS = 400


def _pins(console: ConsoleCall) -> ToolPins:
    runtime = console.runtime
    return ToolPins(runtime.store, runtime.clock, runtime.audit)


@router.get("/console/tools")
def tools_page(console: ConsoleCall) -> Response:
    console.require("api:tool.list", service("tools"))
    records = sorted(_pins(console).records(),
                     key=lambda r: (not r.pending, r.state == "reviewed", r.tool_id))
    return render(console, "tools.html", "tools", records=records,
                  pending=pending_count(console.runtime.store, console.now))


@router.get("/console/tools/{tool_id:path}/view")
def tool_page(tool_id: str, console: ConsoleCall) -> Response:
    console.require("api:tool.list", service("tools"))
    record = _pins(console).record(tool_id)
    may_review = console.state.control.decide(
        console.principal, "api:tool.review", service("tools")).is_allowed
    reviewed = record.definition or {}
    pending = [(p, [(f, reviewed.get(f), p.definition.get(f)) for f in DEFINITION_FIELDS])
               for p in record.pending]
    return render(console, "tool.html", "tools", record=record, definitions=pending,
                  reviewed_fields=[(f, reviewed.get(f)) for f in DEFINITION_FIELDS],
                  may_review=may_review, pending=pending_count(console.runtime.store,
                                                               console.now))


@router.post("/console/tools/{tool_id:path}/review")
async def review(tool_id: str, request: Request, console: ConsoleCall) -> Response:
    return await _decide(tool_id, request, console, reject=False)


@router.post("/console/tools/{tool_id:path}/reject")
async def reject(tool_id: str, request: Request, console: ConsoleCall) -> Response:
    return await _decide(tool_id, request, console, reject=True)


async def _decide(tool_id: str, request: Request, console: ConsoleCall, *,
                  reject: bool) -> Response:
    """A review or rejection of the definition the page showed, by its digest and no
    other: audited as tool.review / tool.reject; refused tool_review_stale if no waiting
    definition has it, review_digest_missing if the form names none."""
    form = await check_csrf(request, console)
    console.require("api:tool.review", service("tools"))
    pins = _pins(console)
    decide = pins.reject if reject else pins.review
    decide(tool_id, by=console.principal.id, expected_digest=form.get("expected_digest", ""))
    return RedirectResponse(f"/console/tools/{tool_id}/view", status_code=303)


@dataclass(frozen=True, slots=True)
class Graph:
    """Positions of the nodes and edges of an access-path graph, for the SVG."""

    width: int
    height: int
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


def layout(paths: list[AccessPath]) -> Graph:
    """Agents on the left, tools in the middle, connectors (or the tool's sensitivity
    when it has no connector) on the right; one edge per path and per tool."""
    agents = sorted({p.agent_id for p in paths})
    tools = sorted({p.tool.tool_id for p in paths})
    targets = sorted({_target(p) for p in paths})
    rows = max(len(agents), len(tools), len(targets), 1)
    y = {("agent", a): 30 + i * _ROW for i, a in enumerate(agents)}
    y.update({("tool", t): 30 + i * _ROW for i, t in enumerate(tools)})
    y.update({("target", t): 30 + i * _ROW for i, t in enumerate(targets)})
    nodes = [{"kind": kind, "label": label, "x": _COLUMNS[column], "y": y[(kind, label)]}
             for column, (kind, labels) in enumerate(
                 (("agent", agents), ("tool", tools), ("target", targets)))
             for label in labels]
    edges = [{"x1": _COLUMNS[0] + 300, "y1": y[("agent", p.agent_id)],
              "x2": _COLUMNS[1], "y2": y[("tool", p.tool.tool_id)],
              "kind": p.reach + (" approval" if p.needs_approval else ""),
              "title": f"{p.agent_id} → {p.tool.tool_id}: {p.reach}"
                       f"{', needs approval' if p.needs_approval else ''}"
                       f" ({', '.join(p.policy_ids)})"} for p in paths]
    seen: set[tuple[str, str]] = set()
    for p in paths:
        pair = (p.tool.tool_id, _target(p))
        if pair not in seen:
            seen.add(pair)
            edges.append({"x1": _COLUMNS[1] + 260, "y1": y[("tool", pair[0])],
                          "x2": _COLUMNS[2], "y2": y[("target", pair[1])], "kind": "data",
                          "title": f"{pair[0]} → {pair[1]}"})
    return Graph(width=_COLUMNS[2] + 260, height=30 + rows * _ROW, nodes=nodes, edges=edges)


def _target(path: AccessPath) -> str:
    sensitivity = path.tool.sensitivity.name.lower()
    return f"{path.connector} ({sensitivity})" if path.connector else sensitivity


@router.get("/console/paths")
def paths_page(console: ConsoleCall, agent: str = "", to: str = "",
               connector: str = "") -> Response:
    console.require("api:paths.read", service("paths"))
    runtime = console.runtime
    everyone = known_agents(runtime.registry, runtime.settings.policy_dir)
    found = access_paths(runtime.engine, everyone,
                         grants_live=live_grants(runtime.store, now=console.now),
                         agent=agent or None, tool=to or None,
                         connector=connector or None)[:_MAX_PATHS]
    return render(console, "paths.html", "paths", paths=found, graph=layout(found),
                  agents=everyone, tools=sorted(t.tool_id for t in runtime.engine.catalog),
                  connectors=runtime.engine.catalog.connectors,
                  chosen={"agent": agent, "to": to, "connector": connector},
                  pending=pending_count(runtime.store, console.now))


@router.get("/console/connectors")
def connectors_page(console: ConsoleCall) -> Response:
    console.require("api:connector.list", service("connectors"))
    from proctor.oversight.inventory import Inventory

    runtime = console.runtime
    inventory = Inventory(runtime.store, runtime.clock)
    agents = known_agents(runtime.registry, runtime.settings.policy_dir)
    live = live_grants(runtime.store, now=console.now)
    reports = [inventory.report(c, runtime.engine, agents, live).as_json()
               for c in inventory.list()]
    return render(console, "connectors.html", "connectors", reports=reports,
                  pending=pending_count(runtime.store, console.now))
