"""The ``proctor`` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own click
from typer.core import TyperGroup

from proctor.cli import (
    agent,
    approvals,
    audit,
    connector,
    demo,
    discover,
    grant,
    paths,
    policy,
    report,
    secret,
    serve,
    tool,
)
from proctor.cli import gateway as gateway_cli
from proctor.cli.operator import ByOpt, acting_runtime, operator_for
from proctor.cli.output import console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError

__all__ = ["app"]

try:  # strings and defaults coerced without pydantic (see the module)
    from proctor.cli import coercion
except (ImportError, AttributeError):  # not typer 0.29's internals: typer coerces them
    logging.getLogger(__name__).debug("typer coerces the command line itself")
else:
    coercion.install()



class _Commands(TyperGroup):
    """The root command: a usage error (an unknown command or option, a bad or missing
    value) is one line on stderr, ``error: …`` (with ``--json``, the CLI's JSON error on
    stdout, code ``request_invalid``), exit 2; not the usage text in a framed box."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            try:
                code = super().main(argv, prog_name, complete_var, False, windows_expand_args,
                                    **extra)
            except NoArgsIsHelpError as help_only:  # `proctor` alone: its help
                help_only.show()
                code = help_only.exit_code
            except ClickException as exc:
                fail(" ".join(exc.format_message().split()), code="request_invalid",
                     as_json="--json" in argv, exit_code=exc.exit_code)
            except typer.Abort:  # a prompt's ^C or end of input
                fail("aborted", code="request_invalid", exit_code=1)
        except typer.Exit as done:  # fail's own
            code = done.exit_code
        # a command's return value is not an exit code (typer's standalone mode ignores it)
        sys.exit(code if type(code) is int else 0)


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    help="proctor: runtime authorization and oversight for AI agents.",
    pretty_exceptions_enable=False,
)
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(agent.app, name="agent")
app.add_typer(grant.task_app, name="task")
app.add_typer(grant.grant_app, name="grant")
app.add_typer(approvals.app, name="approvals")
app.add_typer(secret.app, name="secret")
app.add_typer(tool.app, name="tool")
app.add_typer(connector.app, name="connector")
app.add_typer(report.app, name="report")
app.add_typer(serve.token_app, name="token")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.add_typer(gateway_cli.mcp_app, name="mcp")
app.command("gateway")(gateway_cli.gateway)
app.command("discover")(discover.discover)
app.command("paths")(paths.paths)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _print_version(wanted: bool) -> None:
    if wanted:
        from proctor import __version__

        console.print(f"proctor {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
          version: Annotated[bool, typer.Option(
              "--version", callback=_print_version, is_eager=True,
              help="Print proctor's version and exit.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


@app.command()
def init(by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Create the home ($PROCTOR_HOME, default ./.proctor), its database and example
    policies, and activate them; the local admin token it creates is audited as the
    operator's."""
    from proctor.runtime import init_home

    try:
        settings = load_settings()
        operator_for(by, settings)  # a bad --by changes nothing, not even the home
        created = init_home(settings)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    from proctor.server import ApiTokens  # not at the top: other commands start without it

    with acting_runtime(by, as_json) as (runtime, acting):
        active = runtime.policies.active_revision()
        minted = serve.ensure_admin_token(ApiTokens(runtime.store, runtime.clock), acting)
    info = {"home": str(settings.home), "database": (settings.is_embedded and "sqlite")
            or "postgresql", "policy_dir": str(settings.policy_dir), "created": created,
            "active_revision": active.id if active else None,
            "admin_token": minted.token if minted else None}
    if as_json:
        print_json(info)
    else:
        verb = "created" if created else "already present"
        console.print(f"home {settings.home} {verb}; policies in {settings.policy_dir}; "
                      f"active revision {info['active_revision']}")
        if minted is not None:
            serve.announce_admin_token(minted)
