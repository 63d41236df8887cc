"""Fixtures for the conformance tests: the installed suite and a running upstream.

Outside CI, a machine where Node 22 and the suite cannot be installed (no npm,
no registry) skips these tests; with ``CI=true`` that fails them, because CI
must run the conformance suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.runner import ConformanceError, install_suite
from tests.conformance.upstream import served_in_thread
from tests.conftest import IN_CI


@pytest.fixture(scope="session")
def conformance_suite() -> None:
    """Node 22 and the conformance suite in ``.tools/conformance``, installed if missing."""
    try:
        install_suite()
    except ConformanceError as exc:
        if IN_CI:
            pytest.fail(f"{exc} (CI must run the MCP conformance suite)")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def conformance_upstream() -> Iterator[str]:
    """The URL of the conformance upstream (``tests.conformance.upstream``), served on a
    thread of this process: the upstream's protocol is the subject, not its process
    (``python -m tests.conformance.runner`` starts it as one)."""
    with served_in_thread() as url:
        yield url
