"""The README's first command: set up the embedded default and show real decisions."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from proctor.cli.main import app

runner = CliRunner()


def test_init_creates_home_database_and_active_example_policies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = runner.invoke(app, ["init", "--json"], env={"PROCTOR_HOME": str(home)})
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["created"] is True
    assert info["active_revision"] == 1
    assert (home / "proctor.db").is_file()
    assert (home / "policies" / "baseline.cedar").is_file()

    again = json.loads(runner.invoke(app, ["init", "--json"],
                                     env={"PROCTOR_HOME": str(home)}).stdout)
    assert again["created"] is False
    assert again["active_revision"] == 1


def test_init_with_an_unreachable_database_fails_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init"], env={
        "PROCTOR_HOME": str(tmp_path / "home"),
        "PROCTOR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    })
    assert result.exit_code == 1
    assert result.stderr.startswith("error: database migration failed")
    assert len(result.stderr.strip().splitlines()) == 1
