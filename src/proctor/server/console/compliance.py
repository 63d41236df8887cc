"""Compliance: the report of the last days, built from real decisions when the page is
asked for (read-only: it names the newest checkpoint that covers what it cites, and
signs none). ``proctor report compliance`` makes the signed, bundled one."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from starlette.responses import Response

from proctor.oversight.compliance import ReportSources, build_report
from proctor.server.console.queries import pending_count
from proctor.server.console.web import ConsoleCall, ConsoleRoute, render
from proctor.server.control import service

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

_WINDOW = timedelta(days=7)


@router.get("/console/compliance")
def compliance_page(console: ConsoleCall) -> Response:
    console.require("api:audit.export", service("audit"))
    runtime = console.runtime
    sources = ReportSources(runtime.store, runtime.engine, runtime.policies,
                            runtime.registry, runtime.clock)
    until = console.now + timedelta(seconds=1)
    report = build_report(sources, since=until - _WINDOW, until=until).as_json()
    return render(console, "compliance.html", "compliance", report=report,
                  pending=pending_count(runtime.store, console.now))
