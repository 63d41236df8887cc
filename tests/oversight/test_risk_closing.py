"""Closing the runtime waits for the risk engine's catch-up in the background: it reads
and writes the store. Before, Runtime.close disposed of the store under it; the catch-up
went on in a fresh pool nobody closed, and its PostgreSQL connection was left open until
the garbage collector found it (a ResourceWarning in whichever later test that was)."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

from sqlalchemy import update

from proctor.config import Settings
from proctor.runtime import init_home, open_runtime
from proctor.store.tables import audit_head
from tests.console import scenario as sc
from tests.store.test_store import _connections_to

ENGINE_LOG = "proctor.oversight.risk.engine"


class _Closing(logging.Handler):
    """Sets ``seen`` when the engine says it waits for its catch-up."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for the catch-up" in record.getMessage():
            self.seen.set()


def test_closing_waits_for_the_catch_up_and_leaves_no_connection_open(
        database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    gc.collect()  # what earlier tests left to the collector closed: the count stands still
    before = _connections_to(database_url)  # the session's database has others' too
    runtime = open_runtime(settings)
    reached, released = threading.Event(), threading.Event()

    def stage(name: str) -> None:  # the catch-up holds between folding and storing
        if name == "scored":
            reached.set()
            released.wait()

    runtime.risk._stage = stage
    sc.build(runtime, rich=True)  # events, folded as written
    with runtime.store.transaction() as conn:  # as if none were: the catch-up has work
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(folded=0))
    closing = _Closing()
    logger = logging.getLogger(ENGINE_LOG)
    logger.addHandler(closing)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        runtime.risk.catch_up_soon()
        assert reached.wait(60)
        catching_up = runtime.risk._catching_up
        assert catching_up is not None
        closer = threading.Thread(target=runtime.close)
        closer.start()
        # the close waits for the catch-up, which goes on once the close says so; a
        # close that does not wait returns while the catch-up still holds
        closing.seen.wait(60)
        released.set()
        closer.join()
        still_catching_up = catching_up.is_alive()
        catching_up.join()
    finally:
        released.set()
        logger.removeHandler(closing)
        logger.setLevel(level)
    assert _connections_to(database_url) == before  # before: one more, for the collector
    assert not still_catching_up and closing.seen.is_set()
