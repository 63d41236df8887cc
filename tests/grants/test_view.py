"""Tasks and revocations from memory while the change feed is current: an ending or a
revocation committed through another store is seen by the next read, and only what
changed is read again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import event

from proctor.grants import GrantScope, RevocationView, TaskView
from proctor.grants.tasks import Task
from proctor.store import open_store
from proctor.store.changes import ChangeFeed

from .conftest import CODER, Setup

GIT = GrantScope.from_json({"tools": [{"tool": "git/*"}]})


class _Views:
    def __init__(self, url: str) -> None:
        self.store = open_store(url)  # another process's connections
        self.feed = ChangeFeed(self.store)
        self.tasks = TaskView(self.store, self.feed)
        self.revocations = RevocationView(self.store, self.feed)
        self.statements = 0
        event.listen(self.store.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.statements += 1

    def close(self) -> None:
        self.feed.close()
        self.store.close()


@pytest.fixture
def views(setup: Setup) -> Iterator[_Views]:
    found = _Views(str(setup.store.engine.url.render_as_string(hide_password=False)))
    yield found
    found.close()


async def _until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_an_ended_task_is_seen_by_the_next_read_and_others_stay_in_memory(
        setup: Setup, views: _Views) -> None:
    one = setup.authority.start_task(CODER, purpose="one", on_behalf_of="alice")
    two = setup.authority.start_task(CODER, purpose="two", on_behalf_of="alice")
    assert views.tasks.task(one.id).ended_at is None
    assert views.tasks.task(two.id).purpose == "two"
    before = views.statements
    assert views.tasks.task(one.id).ended_at is None  # from memory
    assert views.statements == before

    setup.authority.end_task(one.id, reason="done")

    def ended() -> bool:
        task: Task = views.tasks.task(one.id)
        return task.ended_at is not None
    await _until(ended)
    before = views.statements
    assert views.tasks.task(two.id).ended_at is None
    assert views.statements == before


@pytest.mark.anyio
async def test_a_revocation_is_seen_by_the_next_read(setup: Setup, views: _Views) -> None:
    task = setup.authority.start_task(CODER, purpose="x", on_behalf_of="alice")
    grant = setup.authority.issue(task.id, GIT)
    lineage = grant.claims.lineage
    assert views.revocations.revoked_among(lineage) == []
    assert views.revocations.revoked_among([*lineage, "lease_unknown"]) == ["lease_unknown"]

    setup.authority.revoke(grant.accessor, "leaked")

    await _until(lambda: views.revocations.revoked_among(lineage) == [grant.grant_id])
    setup.authority.end_task(task.id)
    await _until(lambda: set(views.revocations.revoked_among(lineage)) == set(lineage))
