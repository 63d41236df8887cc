"""``proctor secret``: the downstream credentials the gateway injects, from the terminal.

A value is never taken from the command line, where it would end up in the shell
history and in ``ps``: ``set`` reads it from standard input (a hidden prompt on a
terminal) or from an environment variable (``--from-env VAR``). Nothing prints a
value back; ``list`` shows names, versions and who changed them.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from proctor.cli.operator import Acting, ByOpt, acting_runtime
from proctor.cli.output import console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError, SecretError

if TYPE_CHECKING:
    from proctor.secrets import SecretInfo, SecretStore

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True,
                  help="Store, list and delete the credentials the gateway injects.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NameArg = Annotated[str, typer.Argument(help="The secret's name: 1-128 of A-Z a-z 0-9 _ . -")]


@contextmanager
def _secrets(as_json: bool) -> Iterator[SecretStore]:
    from proctor.runtime import open_runtime

    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        yield runtime.secrets
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()


@contextmanager
def _changing(by: str | None, as_json: bool) -> Iterator[tuple[SecretStore, Acting]]:
    """The secrets, changed as the operator; the store audits each change (and the
    command fails if that event cannot be written)."""
    with acting_runtime(by, as_json) as (runtime, acting):
        yield runtime.secrets, acting


def _read_value(name: str, from_env: str | None) -> str:
    """The value from ``$from_env``, a hidden prompt, or standard input (one trailing
    newline dropped, so ``echo`` and ``printf`` give the same)."""
    from proctor.secrets import MAX_VALUE_BYTES

    if from_env is not None:
        value = os.environ.get(from_env, "")
        if not value:
            raise SecretError("secret_value_invalid",
                              f"environment variable `{from_env}` is not set or empty")
        return value
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name} (not shown): ")
    raw = sys.stdin.buffer.read(MAX_VALUE_BYTES + 3)
    if len(raw) > MAX_VALUE_BYTES + 2:
        raise SecretError("secret_value_invalid",
                          f"a secret value is at most {MAX_VALUE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretError("secret_value_invalid", "standard input is not UTF-8 text") from exc
    return text.removesuffix("\n").removesuffix("\r")


def _info_json(info: SecretInfo) -> dict[str, object]:
    return {"name": info.name, "version": info.version, "created_at": info.created_at,
            "created_by": info.created_by, "updated_at": info.updated_at,
            "updated_by": info.updated_by}


@app.command("set", context_settings={"allow_extra_args": True,
                                      "ignore_unknown_options": True})
def set_secret(
    ctx: typer.Context, name: NameArg,
    from_env: Annotated[str | None, typer.Option(
        "--from-env", metavar="VAR", help="Read the value from this environment variable.")
    ] = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create or replace a secret; the value comes from standard input or --from-env.

    Replacing a secret ends the leases of its old value.
    """
    if ctx.args:  # very likely the value: refuse it without echoing it
        fail("a secret value is never taken from the command line (it would stay in the "
             "shell history); pipe it in or use --from-env", code="secret_value_invalid",
             as_json=as_json)
    with _changing(by, as_json) as (secrets, acting):
        info = secrets.put(name, _read_value(name, from_env), by=acting.operator.actor)
    if as_json:
        print_json(_info_json(info))
    else:
        console.print(f"secret {info.name} stored (version {info.version})", markup=False)


@app.command("list")
def list_secrets(as_json: JsonOpt = False) -> None:
    """List the stored secrets: names, versions, who changed them when; never values."""
    with _secrets(as_json) as secrets:
        entries = secrets.entries()
    if as_json:
        print_json({"secrets": [_info_json(e) for e in entries]})
        return
    if not entries:
        console.print("no secrets stored")
        return
    table = Table("name", "version", "updated", "by")
    for entry in entries:
        table.add_row(entry.name, str(entry.version),
                      entry.updated_at.isoformat(timespec="seconds"), entry.updated_by)
    console.print(table)


@app.command("delete")
def delete_secret(name: NameArg, by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a secret; every lease of it ends."""
    with _changing(by, as_json) as (secrets, acting):
        revoked = secrets.delete(name, by=acting.operator.actor)
    if as_json:
        print_json({"name": name, "deleted": True, "revoked": revoked})
    else:
        console.print(f"secret {name} deleted; {len(revoked)} leases ended", markup=False)
