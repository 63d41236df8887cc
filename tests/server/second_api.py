"""Another API process on the same home and database: the other half of the one-use test.

Usage: python -m tests.server.second_api HOME DATABASE_URL JSON

``JSON`` is one request ``{"method", "path", "headers", "body"}`` (the body as text). The
process opens its own runtime and app on the home, as each ``proctor serve`` does, prints
``ready``, waits for a line on stdin, sends the request through its app, and prints one
JSON line ``{"status", "code"}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx

from proctor.config import Settings
from proctor.runtime import open_runtime
from proctor.server import create_app

BASE_URL = "http://proctor.test"


async def main(home: str, database_url: str, job: dict[str, Any]) -> None:
    settings = Settings(home=Path(home), database_url=database_url,
                        policy_dir=Path(home) / "policies", trust_domain="acme.example")
    runtime = open_runtime(settings)
    try:
        transport = httpx.ASGITransport(app=create_app(runtime), client=("10.4.5.6", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            response = await client.request(job["method"], job["path"], headers=job["headers"],
                                            content=job["body"].encode())
        print(json.dumps({"status": response.status_code,
                          "code": response.json().get("code")}), flush=True)
    finally:
        runtime.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
