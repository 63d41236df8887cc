"""The agent-side SDK as an agent's developer installs it: the ``proctor-client`` wheel,
built from this repository, installed alone into a fresh virtual environment, runs the
plain decorator's example (allowed, out of scope, held for a human, revoked) against a
live server, and none of the server's dependencies is installed there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Live

REPO = Path(__file__).resolve().parents[2]
SERVER_SIDE = ["sqlalchemy", "alembic", "psycopg", "cedarpy", "mcp", "fastapi", "uvicorn",
               "typer", "yaml", "jinja2", "spiffe", "joserfc"]

AGENT = """
import importlib.util, json, os, sys
import proctor, proctor.client
from examples.frameworks.plain_decorator import run

steps = run(os.environ["PROCTOR_URL"], os.environ["PROCTOR_ADMIN_TOKEN"])
print("RESULT " + json.dumps({
    "steps": steps,
    "proctor_from": proctor.__file__,
    "installed": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None],
    "server_parts": [p for p in ("config", "store", "server", "runtime", "policy")
                     if importlib.util.find_spec("proctor." + p) is not None],
}))
"""


def _run(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


@pytest.mark.slow
def test_the_client_distribution_installs_alone_and_guards_an_agent_against_a_live_server(
        live: Live, tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv builds and installs the distribution"
    dist = tmp_path / "dist"
    _run([uv, "build", "--quiet", "--package", "proctor-client", "--wheel", "-o", str(dist)],
         cwd=REPO)
    wheel = next(dist.glob("proctor_client-*.whl"))
    venv = tmp_path / "venv"
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    python = venv / "bin" / "python"
    _run([uv, "pip", "install", "--quiet", "--python", str(python), str(wheel)])

    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env |= {"PROCTOR_URL": live.base, "PROCTOR_ADMIN_TOKEN": live.admin_token}
    # run from the repository's root so that `examples` imports; `proctor` is not there
    # (it is under src/), so it comes from the fresh environment
    out = _run([str(python), "-c", AGENT, *SERVER_SIDE], cwd=REPO, env=env)
    result = json.loads(out.split("RESULT ", 1)[1])

    assert result["steps"] == {
        "allowed": "allow", "denied": "grant_out_of_scope", "approved": "allow",
        "revoked": "grant_revoked", "approvals": "1"}
    assert Path(result["proctor_from"]).is_relative_to(venv)
    assert result["installed"] == []
    assert result["server_parts"] == []
    assert not (venv / "bin" / "proctor").exists()
