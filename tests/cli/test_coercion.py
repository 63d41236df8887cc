"""The command line's values coerce as typer's own pydantic adapters coerce them, for
every parameter of every command, with no adapter built for a string or a default."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.core
from typer import _coercion
from typer._adapters import _parse_cli_str
from typer._click.core import Command, Context
from typer._click.exceptions import BadParameter
from typer.core import TyperGroup
from typer.main import get_command

from proctor.cli import coercion
from proctor.cli.main import app

SAMPLES: tuple[Any, ...] = ("coder", "", " 5 ", "5", "-3", "007", "-0", "900", "1000", "1001",
                            "3601", "1_000", "+5", "٣", "99999999999999999999", "2.5", "yes",
                            "off", "x/y.json",
                            "ünïcode", ".", b"bytes", b"\xff\xfe", 5, -1, 0, 1, 1000, 1001, 3601,
                            2.5, -0.5, 1.0, float("nan"), float("inf"), True, ("a", "b"),
                            ["7"])


def _parameters(command: Command, path: str = "proctor") -> Iterator[tuple[str, Any]]:
    for param in command.params:
        if isinstance(param, typer.core._TyperParameter):
            yield f"{path} {param.name}", param
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _parameters(sub, f"{path} {name}")


COMMAND = get_command(app)
PARAMETERS = dict(_parameters(COMMAND))


def _outcome(runtime: _coercion.RuntimeParam, value: Any, param: Any) -> tuple[str, Any]:
    ctx = Context(COMMAND)
    try:
        return "value", runtime.coerce(value, param=param, ctx=ctx)
    except BadParameter as exc:
        return "error", exc.format_message()
    except (TypeError, ValueError) as exc:  # typer's own adapter may raise these too
        return "raised", f"{type(exc).__name__}: {exc}"


def test_typer_calls_the_replacement_for_each_parameter_of_the_command_it_runs() -> None:
    assert coercion.is_installed()
    param = PARAMETERS["proctor approvals approve by"]
    param._runtime_param = None
    assert type(param.get_runtime_param()).__module__ == coercion.__name__


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_every_parameter_coerces_every_sample_as_typers_adapter(name: str) -> None:
    param = PARAMETERS[name]
    ours = coercion.build_runtime_param(param.type_descriptor)
    theirs = coercion._typer_build(param.type_descriptor)
    assert len(PARAMETERS) > 100
    for value in (None, *SAMPLES):
        if not (param.multiple or param.nargs == -1) and isinstance(value, (tuple, list)):
            continue
        assert _outcome(ours, value, param) == _outcome(theirs, value, param), (name, value)


def test_strings_are_made_as_typers_own_parser_makes_them() -> None:
    for value in SAMPLES:
        if not isinstance(value, (tuple, list)):
            assert coercion.text(value) == _parse_cli_str(value)


def test_with_a_typer_whose_internals_differ_the_cli_leaves_coercion_to_typer() -> None:
    # the lock pins typer 0.29; pyproject allows others, whose private modules may not
    # have what coercion.py uses: the CLI must start all the same, coercing as typer does
    code = (
        "import typer._coercion as c\n"
        "del c.RuntimeParam\n"  # as a typer without it: coercion.py cannot define its kinds
        "from typer.testing import CliRunner\n"
        "from proctor.cli import main\n"
        "assert not hasattr(main, 'coercion')\n"
        "result = CliRunner().invoke(main.app, ['policy', 'validate', sys.argv[1]])\n"
        "print(result.exit_code, result.output.strip())\n"
    )
    examples = Path(__file__).resolve().parents[2] / "examples" / "policies"
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(examples)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 ") and "are valid" in done.stdout
