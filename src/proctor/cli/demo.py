"""``proctor demo``: the whole idea working on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from proctor.cli.output import console, fail, print_json
from proctor.errors import ProctorError

__all__ = ["demo"]


def demo(
    auto_approve: Annotated[bool, typer.Option(
        "--auto-approve", help="Approve the held call as the demo's human, so that the "
        "demo runs unattended.")] = False,
    home: Annotated[Path, typer.Option(
        "--home", help="Where the demo's home goes (replaced on every run).")] =
        Path(".proctor-demo"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the steps as JSON.")] = False,
) -> None:
    """Two agents, a task, a delegated grant, real MCP servers behind the gateway: allowed
    and denied calls, an approval, redaction, a leaked grant, drift, the end of the task,
    and the audit log verified. Exits 1 if any step did not show what it must."""
    from proctor.demo import DemoOptions, run_demo

    options = DemoOptions(home=home.absolute(), auto_approve=auto_approve)
    try:
        report = run_demo(options, None if as_json else console)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    if as_json:
        print_json(report.as_json())
    else:
        verdict = "[bold green]every step showed what it must[/]" if report.ok else \
            "[bold red]some steps did not show what they must[/]"
        console.print(f"\n{verdict}.")
        console.print(f"The demo's home stays in {options.home}; look around with "
                      f"`PROCTOR_HOME={options.home} uv run proctor audit tail`", markup=False)
    if not report.ok:
        raise typer.Exit(1)
