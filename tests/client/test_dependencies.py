"""The SDK runs in an agent's process with HTTP and crypto only: imported with every
server-side dependency made unimportable, it still signs and builds its requests."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER_SIDE = ["sqlalchemy", "alembic", "psycopg", "cedarpy", "fastapi", "starlette",
               "uvicorn", "typer", "yaml", "jinja2", "prometheus_client", "spiffe",
               "joserfc", "rich"]

PROGRAM = textwrap.dedent("""
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is server-side")
            return None

    BLOCKED = set(sys.argv[1:])
    sys.meta_path.insert(0, Refuse())
    import proctor.client as client
    from proctor.client.protocol import Protocol

    key = client.AgentKey.generate()
    protocol = Protocol("http://proctor.test", "spiffe://acme.example/agent/a", key)
    import httpx
    request = httpx.Request("POST", "http://proctor.test/v1/tasks", json={"purpose": "p"})
    signed = next(protocol.auth.auth_flow(request))
    assert signed.headers["Authorization"].startswith("Bearer ey")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("loaded:", loaded)
    parts = sorted({m.split(".")[1] for m in sys.modules
                    if m.startswith("proctor.") and m.count(".") >= 1})
    print("parts:", parts)
""")


def test_the_sdk_imports_and_signs_without_any_server_side_dependency() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM, *SERVER_SIDE], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout
    parts = done.stdout.split("parts:")[1]
    for server_part in ("store", "policy", "grants", "server", "runtime", "identity"):
        assert f"'{server_part}'" not in parts
