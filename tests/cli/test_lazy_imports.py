"""`proctor --help`, `--version` and every group's `--help` start without loading the
database, the policy engine, the MCP SDK or the web server; the MCP wrapper loads no
web framework and no migration tool when the database is current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("sqlalchemy", "alembic", "cedarpy", "mcp", "fastapi", "uvicorn", "starlette",
         "psycopg", "joserfc", "spiffe", "jsonschema")
GROUPS = ("policy", "audit", "agent", "task", "grant", "approvals", "secret", "token", "mcp")

_PROBE = """
import json, sys
from proctor.cli.main import app
heavy = {heavy!r}
seen = {{}}
for argv in {argvs!r}:
    try:
        app(argv)
    except SystemExit:
        pass
    seen[" ".join(argv)] = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
print(json.dumps(seen))
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_help_and_version_load_nothing_heavy() -> None:
    argvs = [["--help"], ["--version"], *([g, "--help"] for g in GROUPS),
             ["serve", "--help"], ["gateway", "--help"], ["demo", "--help"],
             ["mcp", "wrap", "--help"]]
    seen = json.loads(_run(_PROBE.format(heavy=HEAVY, argvs=argvs)))
    assert seen == {" ".join(argv): [] for argv in argvs}


def test_the_version_is_printed() -> None:
    from proctor import __version__

    done = subprocess.run([sys.executable, "-m", "proctor.cli", "--version"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == f"proctor {__version__}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_wrapper_loads_no_web_framework_and_no_migrations(
        database_url: str, tmp_path: Path) -> None:
    # what `proctor mcp wrap` imports and opens before it serves the first message
    code = f"""
import json, sys
from proctor.config import Settings
from proctor.runtime import init_home, open_runtime
import proctor.cli.gateway, proctor.gateway.stdio, proctor.gateway.wrap
from proctor.gateway import Gateway, GatewayConfig
home = {str(tmp_path / "home")!r}
from pathlib import Path
settings = Settings(home=Path(home), database_url={database_url!r},
                    policy_dir=Path(home) / "policies", trust_domain="acme.example")
init_home(settings)
runtime = open_runtime(settings)
Gateway.on(runtime, GatewayConfig())
runtime.close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("fastapi", "alembic", "jinja2") or m.startswith("proctor.server"))))
"""
    assert json.loads(_run(code)) == []
