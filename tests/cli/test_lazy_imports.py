"""`proctor --help`, `--version` and every group's `--help` start without loading the
database, the policy engine, the MCP SDK or the web server; the MCP wrapper loads no
web framework and no migration tool when the database is current; commands on SQLite
(`init` among them) load no PostgreSQL driver, no SPIFFE Workload API client, no HTTP
client and no web application, and those whose options are strings, flags, paths and
plain integers build no pydantic adapter for them (`proctor.cli.coercion`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("sqlalchemy", "alembic", "cedarpy", "mcp", "fastapi", "uvicorn", "starlette",
         "psycopg", "joserfc", "spiffe", "jsonschema", "pydantic")
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
    # a wrapper that cannot start (no grant) says so before it loads the MCP SDK; then
    # what `proctor mcp wrap` imports and opens before it serves the first message
    code = f"""
import json, os, sys
os.environ.pop("PROCTOR_GRANT", None)
from proctor.cli.main import app
try:
    app(["mcp", "wrap", "--agent", "coder", "--", "mcp-server-x"])
except SystemExit as exc:
    assert exc.code == 1, exc.code
assert not {{"mcp", "mcp_types", "starlette"}} & set(sys.modules), "SDK loaded"
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


def test_commands_on_sqlite_load_no_postgresql_driver_workload_api_http_client_or_web_app(
        tmp_path: Path) -> None:
    # psycopg, spiffe (with its gRPC Workload API client) and httpx cost about 0.6 s of
    # CPU to import together, FastAPI and the API's routes 0.7 s, in every process;
    # these commands need none of them
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCTOR_")}
    env["PROCTOR_HOME"] = str(tmp_path / "home")
    # nor pydantic (~0.1 s to import, and an adapter per option): their values are
    # strings, paths and plain integers
    argvs = [["init"], ["approvals", "list", "--json"], ["audit", "verify"], ["token", "list"],
             ["policy", "validate", str(tmp_path / "home" / "policies")],
             ["audit", "search", "--limit", "5"]]
    heavy = ("psycopg", "spiffe", "grpc", "httpx", "fastapi", "starlette", "uvicorn",
             "pydantic")
    code = f"""
import json, sys
from proctor.cli.main import app
seen = {{}}
for argv in {argvs!r}:
    # each command must succeed: a usage error raises, a failure returns its code
    assert app(argv, standalone_mode=False) in (None, 0), argv
    seen[" ".join(argv)] = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True, env=env)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {" ".join(argv): [] for argv in argvs}
