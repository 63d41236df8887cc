"""``proctor tool``: the pinned definitions of upstream tools, and their review.

``list`` shows every pin (``--pending``: only tools with a definition waiting for a
human), ``show`` the reviewed definition against each definition seen since, as diffs;
``review`` makes one of them, named by its digest, the reviewed one and ``reject`` keeps
it denied for good; both audited as the operator's.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from proctor.cli.operator import ByOpt, acting_runtime
from proctor.cli.output import confirm_review, console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError, RequestError

if TYPE_CHECKING:
    from proctor.oversight.pinning import PinRecord, SeenDefinition, ToolPins

__all__ = ["app", "definition_diff"]

app = typer.Typer(no_args_is_help=True,
                  help="Review the definitions of upstream tools (tool pinning).")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ToolArg = Annotated[str, typer.Argument(help="The tool id: server/tool.")]


@contextmanager
def _pins(as_json: bool) -> Iterator[ToolPins]:
    from proctor.oversight.pinning import ToolPins
    from proctor.runtime import open_runtime

    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        yield ToolPins(runtime.store, runtime.clock, runtime.audit)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()


def definition_diff(record: PinRecord, seen: SeenDefinition | None = None) -> str:
    """The reviewed definition against ``seen`` (default: the one a review would show),
    as a unified diff of JSON."""
    def lines(value: Any) -> list[str]:
        if value is None:
            return []
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines(
            keepends=True)

    seen = seen if seen is not None else record.to_review
    if seen is None:
        return ""
    return "".join(difflib.unified_diff(
        lines(record.definition), lines(seen.definition),
        fromfile=f"{record.renamed_from or record.tool_id} (reviewed)",
        tofile=f"{record.tool_id} (definition {seen.digest}, first seen {seen.seen_at})"))


@app.command("list")
def list_pins(
    pending: Annotated[bool, typer.Option("--pending", help="Only tools to review.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the pinned tools: state, what changed, who reviewed them."""
    with _pins(as_json) as pins:
        records = pins.records(pending_only=pending)
    if as_json:
        print_json({"tools": [r.as_json() for r in records]})
        return
    if not records:
        console.print("no tools to review" if pending else "no pinned tools")
        return
    table = Table("tool", "state", "change", "pending", "reviewed by")
    for r in records:
        change = f"{r.change} (from {r.renamed_from})" if r.renamed_from else (r.change or "")
        table.add_row(r.tool_id, r.state, change if r.state == "unreviewed" else "",
                      str(len(r.pending)) if r.pending else "", r.reviewed_by or "")
    console.print(table)


@app.command("show")
def show(tool: ToolArg, as_json: JsonOpt = False) -> None:
    """Show a tool's pin, and the change waiting for review as a diff."""
    with _pins(as_json) as pins:
        record = pins.record(tool)
    if as_json:
        print_json({**record.as_json(), "diff": definition_diff(record)})
        return
    console.print(f"{record.tool_id}: {record.state}"
                  + (f" ({record.change}, seen definition {record.seen_digest})"
                     if record.state == "unreviewed" else "")
                  + (f" (rejected definition {record.seen_digest})"
                     if record.state == "rejected" else ""),
                  markup=False, soft_wrap=True)
    for seen in record.pending:
        console.print(f"pending definition {seen.digest} ({seen.change}, "
                      f"{'listed now' if seen.is_listed else 'not listed now'})",
                      markup=False, soft_wrap=True)
        console.print(definition_diff(record, seen), markup=False, end="", highlight=False,
                      soft_wrap=True)
    for seen in record.rejected:
        console.print(f"rejected definition {seen.digest} by {seen.decided_by}",
                      markup=False, soft_wrap=True)


DigestOpt = Annotated[str | None, typer.Option(
    "--digest", help="The digest of the definition (tool show's); without it, the "
    "definition the upstream lists now (else the last listed) is shown and the command "
    "asks for a yes.")]


@app.command("review")
def review(tool: ToolArg, by: ByOpt = None, digest: DigestOpt = None,
           as_json: JsonOpt = False) -> None:
    """Accept one definition seen since the last review, named by its digest: the tool is
    listed and can be called again as so defined. Audited as the operator's. Refused
    tool_review_stale if no definition with that digest waits for a human."""
    _decide(tool, by, digest, as_json, verdict="reviewed")


@app.command("reject")
def reject(tool: ToolArg, by: ByOpt = None, digest: DigestOpt = None,
           as_json: JsonOpt = False) -> None:
    """Reject one definition seen since the last review, named by its digest: it stays
    hidden and denied (tool_rejected) whenever an upstream lists it, in any pin mode, and
    is never reviewed. Audited as the operator's. A rejection is final."""
    _decide(tool, by, digest, as_json, verdict="rejected")


def _decide(tool: str, by: str | None, digest: str | None, as_json: bool, *,
            verdict: str) -> None:
    """A review or rejection, shown and confirmed when no ``--digest`` names it."""
    from proctor.oversight.pinning import ToolPins

    verb = "accept" if verdict == "reviewed" else "reject"
    with acting_runtime(by, as_json) as (runtime, acting):
        pins = ToolPins(runtime.store, runtime.clock, runtime.audit)
        if digest is None:
            shown = pins.record(tool)
            seen = shown.to_review
            if seen is None:
                raise RequestError(f"tool `{shown.tool_id}` has no change to review")
            if not as_json:
                console.print(definition_diff(shown, seen), markup=False, end="",
                              highlight=False, soft_wrap=True)
                others = len(shown.pending) - 1
                if others:
                    console.print(f"{others} other definition(s) wait too: proctor tool show "
                                  f"{shown.tool_id}", markup=False, soft_wrap=True)
            confirm_review(f"{verb} definition {seen.digest} of {shown.tool_id}?",
                           as_json=as_json)
            digest = seen.digest
        decide = pins.review if verdict == "reviewed" else pins.reject
        record = decide(tool, by=acting.operator.id, expected_digest=digest)
    if as_json:
        print_json(record.as_json())
    elif verdict == "reviewed":
        console.print(f"{record.tool_id} reviewed by {record.reviewed_by}", markup=False)
    else:
        console.print(f"{record.tool_id}: definition {digest} rejected by "
                      f"{acting.operator.id}", markup=False, soft_wrap=True)
