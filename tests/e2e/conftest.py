"""The end-to-end tests reuse the identity tests' registry and trust fixtures and the
gateway tests' deployment."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import Deployment, make_deployment
from tests.identity.conftest import (  # noqa: F401 - fixtures, used by name
    authenticator,
    oidc_authority,
    registry,
    svid_authority,
    trust,
    wall_clock,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def deployment(database_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """A proctor home with a registered coding agent, for the gateway's end-to-end tests."""
    yield from make_deployment(database_url, tmp_path)
