"""``proctor tool``: the pinned definitions of upstream tools, and their review.

``list`` shows every pin (``--pending``: only tools waiting for a review), ``show``
the reviewed definition against the one seen since, as a diff, and ``review`` makes
the seen definition the reviewed one, audited as the operator's.
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
    from proctor.oversight.pinning import PinRecord, ToolPins

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


def definition_diff(record: PinRecord) -> str:
    """The reviewed definition against the one seen since, as a unified diff of JSON."""
    def lines(value: Any) -> list[str]:
        if value is None:
            return []
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines(
            keepends=True)

    return "".join(difflib.unified_diff(
        lines(record.definition), lines(record.seen_definition),
        fromfile=f"{record.renamed_from or record.tool_id} (reviewed)",
        tofile=f"{record.tool_id} (seen {record.changed_at})"))


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
    table = Table("tool", "state", "change", "changed", "reviewed by")
    for r in records:
        change = f"{r.change} (from {r.renamed_from})" if r.renamed_from else (r.change or "")
        table.add_row(r.tool_id, r.state, change if r.state == "unreviewed" else "",
                      r.changed_at.isoformat(timespec="seconds") if r.changed_at else "",
                      r.reviewed_by or "")
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
                     if record.state == "unreviewed" else ""),
                  markup=False, soft_wrap=True)
    diff = definition_diff(record)
    if diff:
        console.print(diff, markup=False, end="", highlight=False, soft_wrap=True)


@app.command("review")
def review(
    tool: ToolArg, by: ByOpt = None,
    digest: Annotated[str | None, typer.Option(
        "--digest", help="Only if the definition seen still has this digest (tool show's); "
        "without it, the change is shown and the review asks for a yes.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Accept the definition seen since the last review: the tool is listed and can be
    called again. Audited as the operator's. The review names the digest of the
    definition it accepts: --digest, or the one shown here once confirmed (refused
    tool_review_stale if the upstream listed another one in between)."""
    from proctor.oversight.pinning import ToolPins

    with acting_runtime(by, as_json) as (runtime, acting):
        pins = ToolPins(runtime.store, runtime.clock, runtime.audit)
        if digest is None:
            shown = pins.record(tool)
            if shown.seen_digest is None:
                raise RequestError(f"tool `{shown.tool_id}` has no change to review")
            if not as_json:
                console.print(definition_diff(shown), markup=False, end="", highlight=False,
                              soft_wrap=True)
            confirm_review(f"accept definition {shown.seen_digest} of {shown.tool_id}?",
                           as_json=as_json)
            digest = shown.seen_digest
        record = pins.review(tool, by=acting.operator.id, expected_digest=digest)
    if as_json:
        print_json(record.as_json())
    else:
        console.print(f"{record.tool_id} reviewed by {record.reviewed_by}", markup=False)
