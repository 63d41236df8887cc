"""``proctor discover``: the MCP servers configured on this machine, and what they expose.

Exit codes: 0 when nothing was found in plaintext, 1 when a config holds a plaintext
secret (so that a CI job can fail on it), 2 for a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from proctor.cli.output import console, err_console, print_json

__all__ = ["discover"]

_EXIT_SECRETS = 1


def discover(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Config files, or folders read as a home and as a project "
             "(default: your home and the current folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")
                       ] = False,
) -> None:
    """Find MCP client configurations (Claude Desktop, Claude Code, Cursor, VS Code,
    Windsurf, Zed, Continue, Gemini CLI, Codex) and report each server: command or URL,
    transport, environment, plaintext secrets, authentication, and whether it runs
    behind proctor. Exits 1 if a plaintext secret was found."""
    from proctor.oversight.discovery import discover as scan

    found = scan(paths or ())
    if as_json:
        print_json(found.as_json())
    else:
        _print(found)
    if found.has_plaintext_secrets:
        raise typer.Exit(_EXIT_SECRETS)


def _print(found: object) -> None:
    from proctor.oversight.discovery import Discovery

    assert isinstance(found, Discovery)
    if not found.servers:
        console.print(f"no MCP servers found in {len(found.files)} config files", markup=False)
    else:
        table = Table("client", "server", "transport", "command / url", "env", "auth",
                      "plaintext secrets", "proctor", title=None)
        for server in found.servers:
            target = server.url if server.url is not None else " ".join(server.command)
            table.add_row(server.client, server.name, server.transport, target,
                          ", ".join(server.env) or "-", server.auth,
                          ", ".join(s.where for s in server.secrets) or "-",
                          "yes" if server.behind_proctor else "no")
        console.print(table)
        files = sorted({s.file for s in found.servers})
        console.print("files: " + ", ".join(files), markup=False, soft_wrap=True)
    for problem in found.problems:
        err_console.print(f"skipped {problem.file}: {problem.message} ({problem.code})",
                          markup=False, soft_wrap=True)
    secrets = sum(len(s.secrets) for s in found.servers)
    if secrets:
        err_console.print(f"{secrets} plaintext secrets: move them into proctor's secret "
                          "store with `proctor discover --wrap FILE`", markup=False)
