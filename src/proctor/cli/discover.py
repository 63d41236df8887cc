"""``proctor discover``: the MCP servers configured on this machine, and what they expose;
``proctor discover --wrap FILE``: the same file with every local server behind proctor.

Exit codes of a scan: 0 when nothing was found in plaintext, 1 when a config holds a
plaintext secret (so that a CI job can fail on it), 2 for a usage error. ``--wrap``
shows the diff and writes nothing unless ``--write`` is given; then, in order, it
stores the moved secrets (each audited), copies the file to a backup beside it, writes
the new file to a temporary file, checks that it reads back with every local server
wrapped, and renames it over the old one (keeping its mode) as the effects of its
``mcp_config.wrap`` event, in the audit writer's transaction. If that event cannot be
written the file is rewritten all the same (its servers go behind proctor) and the
command fails (``audit_unavailable``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from proctor.cli.operator import ByOpt, acting_runtime
from proctor.cli.output import console, err_console, fail, print_json
from proctor.errors import ConfigError, ProctorError

if TYPE_CHECKING:
    from proctor.audit import AuditEvent, WriteCursor
    from proctor.oversight.wrapping import WrapPlan

__all__ = ["discover"]

_EXIT_SECRETS = 1


def discover(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Config files, or folders read as a home and as a project "
             "(default: your home and the current folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")
                       ] = False,
    wrap: Annotated[Path | None, typer.Option(
        "--wrap", metavar="FILE", help="Rewrite FILE so that each local server runs "
        "through `proctor mcp wrap` (a dry run unless --write).")] = None,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="With --wrap: the agent the servers are wrapped for.")] = None,
    key_file: Annotated[str | None, typer.Option(
        "--key-file", help="With --wrap: the agent's private key file.")] = None,
    grant_file: Annotated[str | None, typer.Option(
        "--grant-file", help="With --wrap: the file the agent's grant is kept in.")] = None,
    home: Annotated[str | None, typer.Option(
        "--home", help="With --wrap: the PROCTOR_HOME the wrapper opens "
                       "(default: this command's).")] = None,
    proctor: Annotated[str | None, typer.Option(
        "--proctor", help="With --wrap: the proctor command the client runs "
                          "(default: the one on PATH).")] = None,
    write: Annotated[bool, typer.Option(
        "--write", help="With --wrap: store the secrets and write the file.")] = False,
    register: Annotated[bool, typer.Option(
        "--register", help="Record each server found in the connector inventory.")] = False,
    by: ByOpt = None,
) -> None:
    """Find MCP client configurations (Claude Desktop, Claude Code, Cursor, VS Code,
    Windsurf, Zed, Continue, Gemini CLI, Codex) and report each server: command or URL,
    transport, environment, plaintext secrets, authentication, and whether it runs
    behind proctor. Exits 1 if a plaintext secret was found.

    With --wrap FILE: show how FILE would run each local server through proctor, its
    plaintext secrets moved into proctor's secret store; --write does it.
    """
    if wrap is not None:
        _wrap(wrap, agent=agent, key_file=key_file, grant_file=grant_file, home=home,
              proctor=proctor, write=write, by=by, as_json=as_json)
        return
    from proctor.oversight.discovery import discover as scan

    found = scan(paths or ())
    registered = _register(found, by=by, as_json=as_json) if register else []
    if as_json:
        print_json({**found.as_json(), "registered": registered})
    else:
        _print(found)
        if registered:
            err_console.print(f"registered connectors: {', '.join(registered)}",
                              markup=False)
    if found.has_plaintext_secrets:
        raise typer.Exit(_EXIT_SECRETS)


def _register(found: object, *, by: str | None, as_json: bool) -> list[str]:
    """Record each server found as an ``mcp_server`` connector (once per id), noting a
    plaintext secret; returns the ids added."""
    from proctor.oversight.discovery import Discovery
    from proctor.oversight.inventory import Connector, Inventory
    from proctor.oversight.wrapping import proctor_server_name

    assert isinstance(found, Discovery)
    added: list[str] = []
    with acting_runtime(by, as_json) as (runtime, acting):
        inventory = Inventory(runtime.store, runtime.clock)
        for server in found.servers:
            connector_id = proctor_server_name(server.name)
            if inventory.find(connector_id) is None:
                inventory.add_with_event(Connector(
                    id=connector_id, kind="mcp_server", name=f"{server.name} ({server.client})",
                    servers=(connector_id,), source="discover"), acting.audit,
                    acting.operator.actor, source="cli",
                    detail={"source": "discover", "file": server.file})
                added.append(connector_id)
            if server.secrets:
                inventory.note_plaintext(connector_id)
    return added


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


def _wrap(path: Path, *, agent: str | None, key_file: str | None, grant_file: str | None,
          home: str | None, proctor: str | None, write: bool, by: str | None,
          as_json: bool) -> None:
    from proctor.config import load_settings
    from proctor.oversight.wrapping import WrapOptions, plan_wrap

    if not agent:
        fail("--wrap needs --agent: the agent the servers run for", code="config_invalid",
             as_json=as_json)
    try:
        options = WrapOptions(
            agent=agent, proctor=proctor or shutil.which("proctor") or "proctor",
            home=home or str(load_settings().home),
            key_file=str(Path(key_file).absolute()) if key_file else None,
            grant_file=str(Path(grant_file).absolute()) if grant_file else None)
        plan = plan_wrap(path, options)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    if as_json:
        print_json({"file": str(path), "client": plan.client.name, "changed": plan.is_change,
                    "wrapped": list(plan.wrapped), "written": write and plan.is_change,
                    "left": [{"server": s, "why": why} for s, why in plan.left],
                    "secrets": [{"server": s.server, "where": s.where, "name": s.name}
                                for s in plan.secrets], "diff": plan.diff()})
    else:
        diff = plan.diff()
        console.print(diff if diff.endswith("\n") or not diff else diff + "\n", markup=False,
                      end="", soft_wrap=True, highlight=False)
        for server, why in plan.left:
            err_console.print(f"{server}: {why}", markup=False)
        for secret in plan.secrets:
            err_console.print(f"{secret.server}: {secret.where} moves into the secret store "
                              f"as `{secret.name}`", markup=False)
    if not plan.is_change:
        if not as_json:
            err_console.print("nothing to change: every local server runs behind proctor",
                              markup=False)
        return
    if not write:
        if not as_json:
            err_console.print("dry run: nothing written (run again with --write)",
                              markup=False)
        return
    backup = _apply(plan, by=by, as_json=as_json)
    if not as_json:
        err_console.print(f"{path} rewritten ({len(plan.wrapped)} servers behind proctor, "
                          f"{len(plan.secrets)} secrets moved); backup in {backup}",
                          markup=False)


@dataclass(slots=True)
class _Rewrite:
    """The config replaced by its checked rewrite (``temporary``, beside it), in the
    audit writer's transaction: the rename is the last step before the commit, so the
    log holds the ``mcp_config.wrap`` event if the config was rewritten, but for a
    process that dies between the two (a file and a database share no transaction)."""

    temporary: Path
    path: Path
    refusal: ProctorError | None = None

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        from proctor.audit.writer import WITHDRAWN

        self.refusal = None  # a retried batch applies it again
        try:
            self.alone()
        except OSError as exc:
            self.refusal = ConfigError(f"cannot write `{self.path}`: {exc.strerror}")
            return WITHDRAWN
        return None

    def alone(self) -> None:
        """The rename; nothing if a retried batch made it already."""
        if self.temporary.exists():
            self.temporary.replace(self.path)


def _apply(plan: WrapPlan, *, by: str | None, as_json: bool) -> Path:
    from proctor.oversight.audited import commit_with_event
    from proctor.oversight.discovery import read_config
    from proctor.oversight.wrapping import WrapOptions, plan_wrap

    path = plan.path
    with acting_runtime(by, as_json) as (runtime, acting):
        for secret in plan.secrets:
            runtime.secrets.put(secret.name, secret.value, by=acting.operator.actor)
        stamp = runtime.clock.now().strftime("%Y%m%dT%H%M%SZ")
        backup = path.with_name(f"{path.name}.{stamp}.bak")
        temporary: Path | None = None
        try:
            # never the plaintext the rewrite moved, and readable by its owner alone
            with os.fdopen(os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                           "w", encoding="utf-8") as saved:
                saved.write(plan.backup)
            mode = path.stat().st_mode & 0o7777
            handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            temporary = Path(name)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(plan.rewritten)
            temporary.chmod(mode)
            read_config(temporary, plan.client)  # it reads back, completely
            again = plan_wrap(temporary, WrapOptions(agent="-"), client=plan.client)
            if again.wrapped:
                raise ConfigError(f"the rewrite of `{path}` left servers unwrapped")
            # the rename is the effects of its event, in the audit writer's transaction;
            # unaudited: made all the same (the servers go behind proctor), the command fails
            rewrite = _Rewrite(temporary, path)
            commit_with_event(acting.audit, acting.event(
                "mcp_config.wrap", str(path), "rewritten", detail={
                    "client": plan.client.name, "servers": list(plan.wrapped),
                    "secrets": [s.name for s in plan.secrets], "backup": str(backup)}),
                rewrite, alone=rewrite.alone)
        except OSError as exc:
            raise ConfigError(f"cannot write `{path}`: {exc.strerror}") from None
        finally:
            if temporary is not None:  # renamed, or refused: the config stays as it was
                temporary.unlink(missing_ok=True)
    return backup
