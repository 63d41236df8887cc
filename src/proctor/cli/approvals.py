"""``proctor approvals``: the queue of calls waiting for a human, from the terminal.

The CLI works on the home's database directly, so whoever runs it is the local
administrator; the operator (``--by``, else ``PROCTOR_OPERATOR``, else the login
name: see :mod:`proctor.cli.operator`) is the human who decides, and is what the
audit log records. It must be a human id (never a SPIFFE ID), and separation of
duties applies as everywhere: the human an agent acts for may not approve its
request unless the policy that asked says ``@owner_may_approve("true")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from proctor.cli.operator import Acting, ByOpt, acting_runtime
from proctor.cli.output import console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError

if TYPE_CHECKING:
    from proctor.approvals import (
        Approval,
        ApprovalDesk,
    )

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True,
                  help="List, show, approve and deny calls waiting for a human.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IdArg = Annotated[str, typer.Argument(help="The approval id (apr_…).")]
CommentOpt = Annotated[str, typer.Option("--comment", help="Why (kept with the decision).")]
_COLOURS = {"pending": "yellow", "approved": "green", "used": "green", "denied": "red",
            "expired": "dim"}


@contextmanager
def _desk(as_json: bool) -> Iterator[ApprovalDesk]:
    from proctor.approvals import ApprovalDesk
    from proctor.runtime import open_runtime

    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        yield ApprovalDesk(runtime.store, runtime.clock, runtime.approvals, runtime.grants,
                           runtime.engine)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()


@contextmanager
def _deciding(by: str | None, as_json: bool) -> Iterator[tuple[ApprovalDesk, Acting]]:
    """The desk, deciding as the operator; the queue writes each decision with its
    event, in the audit writer's transaction (unaudited: not decided)."""
    from proctor.approvals import ApprovalDesk

    with acting_runtime(by, as_json) as (runtime, acting):
        yield ApprovalDesk(runtime.store, runtime.clock, runtime.approvals, runtime.grants,
                           runtime.engine), acting


@app.command("list")
def list_approvals(
    status: Annotated[str, typer.Option(
        "--status", help="pending, approved, denied, expired, used or all.")] = "pending",
    task: Annotated[str | None, typer.Option("--task", help="Only this task's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List approval requests, newest first (pending ones by default)."""
    from proctor.approvals import ApprovalStatus, approval_json

    if status != "all" and status not in {s.value for s in ApprovalStatus}:
        fail(f"status `{status[:40]}` is not one of pending, approved, denied, expired, used, "
             "all", code="request_invalid", as_json=as_json)
    with _desk(as_json) as desk:
        found = desk.queue.list(status=None if status == "all" else ApprovalStatus(status),
                                task_id=task, limit=limit)
    if as_json:
        print_json({"approvals": [approval_json(a) for a in found]})
        return
    if not found:
        console.print(f"no {'' if status == 'all' else status + ' '}approval requests")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "status", "agent", "tool", "why", "for", "expires"):
        table.add_column(column)
    for a in found:
        reasons = a.request.get("reasons") or [""]
        table.add_row(a.id, f"[{_COLOURS[a.status.value]}]{a.status.value}[/]",
                      _escape(a.agent_id), _escape(a.tool_id), _escape(str(reasons[0])),
                      _escape(a.on_behalf_of), _when(a.expires_at))
    console.print(table)


@app.command("show")
def show(approval: IdArg, as_json: JsonOpt = False) -> None:
    """Show one request with everything an approver needs to decide."""
    from proctor.approvals import approval_json

    with _desk(as_json) as desk:
        found = desk.queue.get(approval)
    if as_json:
        print_json(approval_json(found))
        return
    _print_detail(found)


@app.command("approve")
def approve(
    approval: IdArg, by: ByOpt = None, comment: CommentOpt = "",
    similar: Annotated[bool, typer.Option(
        "--similar", help="Also approve similar calls within this task: a narrow, short, "
        "use-limited grant (see docs/approvals.md).")] = False,
    vary: Annotated[list[str] | None, typer.Option(
        "--vary", help="With --similar: an argument that may differ (repeatable).")] = None,
    similar_ttl: Annotated[int, typer.Option("--similar-ttl", help="Seconds.")] = 600,
    similar_uses: Annotated[int, typer.Option("--similar-uses")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Approve one waiting call (and, with --similar, calls like it in its task)."""
    from proctor.approvals import SimilarTerms

    if (vary or similar_ttl != 600 or similar_uses != 5) and not similar:
        fail("`--vary`, `--similar-ttl` and `--similar-uses` go with `--similar`",
             code="request_invalid", as_json=as_json)
    terms = SimilarTerms(tuple(vary or ()), similar_ttl, similar_uses) if similar else None
    with _deciding(by, as_json) as (desk, acting):
        decided = desk.decide(approval, approver=acting.operator.id, approve=True,
                              comment=comment, similar=terms, source="cli")
    if as_json:
        print_json(decided.as_json())
        return
    console.print(f"[green]approved[/] {decided.approval.id} by "
                  f"{_escape(decided.approval.decided_by or '')}")
    if decided.similar is not None:
        grant = decided.similar
        console.print(f"similar calls of {_escape(grant.tool_id)} in task {grant.task_id}: "
                      f"pre-approval grant {grant.accessor}, {grant.max_uses} uses, until "
                      f"{_when(grant.expires_at)}")


@app.command("deny")
def deny(approval: IdArg, by: ByOpt = None, comment: CommentOpt = "",
         as_json: JsonOpt = False) -> None:
    """Deny one waiting call."""
    with _deciding(by, as_json) as (desk, acting):
        decided = desk.decide(approval, approver=acting.operator.id, approve=False,
                              comment=comment, source="cli")
    if as_json:
        print_json(decided.as_json())
        return
    console.print(f"[red]denied[/] {decided.approval.id} by "
                  f"{_escape(decided.approval.decided_by or '')}")


def _print_detail(a: Approval) -> None:
    shown: dict[str, Any] = a.request
    colour = _COLOURS[a.status.value]
    console.print(f"[bold]{a.id}[/]  [{colour}]{a.status.value}[/]")
    rows = [
        ("agent", a.agent_id), ("trust state", str(shown.get("trust_state"))),
        ("risk score", str(shown.get("risk_score"))), ("tool", a.tool_id),
        ("task", a.task_id), ("purpose", str(shown.get("purpose") or "")),
        ("on behalf of", a.on_behalf_of), ("grant", a.accessor),
        ("delegation", " → ".join(shown.get("delegation_chain") or []) or "none"),
        ("policies", ", ".join(shown.get("policy_ids") or [])),
        ("created", _when(a.created_at)), ("expires", _when(a.expires_at)),
    ]
    if a.decided_by:
        rows += [("decided by", a.decided_by), ("decided", _when(a.decided_at)),
                 ("comment", a.comment or "")]
    for label, value in rows:
        console.print(f"  [dim]{label:<13}[/] {_escape(value)}")
    console.print("  [dim]why[/]")
    for reason in shown.get("reasons") or []:
        console.print(f"    {_escape(str(reason))}")
    console.print("  [dim]arguments (masked)[/]")
    for name, value in sorted((shown.get("args") or {}).items()):
        console.print(f"    {_escape(str(name))} = {_escape(repr(value))}")


def _escape(text: str) -> str:
    """Agent-supplied text is shown as text, never as Rich markup."""
    return escape(text)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""
