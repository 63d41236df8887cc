"""The gateway tests' deployment, for the telemetry tests."""

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.gateway.conftest import Deployment, make_deployment

if importlib.util.find_spec("opentelemetry.sdk") is None:  # the `otel` extra
    if IN_CI:
        raise RuntimeError("the OpenTelemetry SDK is missing: CI syncs every extra")
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def deployment(sqlite_template: Path, tmp_path: Path) -> Iterator[Deployment]:
    import shutil

    database = tmp_path / "proctor.db"
    shutil.copyfile(sqlite_template, database)
    yield from make_deployment(f"sqlite:///{database}", tmp_path)
