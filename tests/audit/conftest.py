"""Fixtures for the audit tests: a migrated store on each backend, a key, a log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proctor.audit import AuditLog
from proctor.clock import FrozenClock
from proctor.keys import LocalSigner
from proctor.store import Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def signer() -> LocalSigner:
    return LocalSigner.generate()


@pytest.fixture
def audit(store: Store, signer: LocalSigner, clock: FrozenClock) -> Iterator[AuditLog]:
    log = AuditLog(store, signer=signer, clock=clock, checkpoint_every=10, timeout=20.0)
    try:
        yield log
    finally:
        log.close()
