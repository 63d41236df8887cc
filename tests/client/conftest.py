"""A real ``proctor serve`` app on a loopback port (uvicorn in a thread) over SQLite, with
the example policies and the wall clock: the SDK signs real proofs at real times and
talks real HTTP, as in an agent's process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from examples.frameworks.operator import Operator

from proctor.config import Settings
from proctor.runtime import Runtime, init_home, open_runtime
from proctor.server import ApiTokens
from tests.console.live import serving


@dataclass
class Live:
    base: str
    runtime: Runtime
    admin_token: str
    operator: Operator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def live(sqlite_template: Path, tmp_path: Path) -> Iterator[Live]:
    home = tmp_path / "home"
    database = tmp_path / "proctor.db"
    shutil.copyfile(sqlite_template, database)
    settings = Settings(home=home, database_url=f"sqlite:///{database}",
                        policy_dir=home / "policies", trust_domain="acme.example")
    init_home(settings)
    runtime = open_runtime(settings)
    try:
        minted = ApiTokens(runtime.store, runtime.clock).ensure_admin()
        assert minted is not None
        with serving(runtime) as base:
            operator = Operator(base, minted.token)
            yield Live(base, runtime, minted.token, operator)
            operator.close()
    finally:
        runtime.close()
