"""Verification reads one snapshot: its pages, the head, the checkpoints and the cuts
agree with each other whatever another connection commits while it walks (an archive's
deletion chunk, a decision's events). The walk is the real one, in pages of four (its
own ``page`` parameter); what another connection commits is committed between two of
its pages, or after its last one and before the rest is read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor.audit import AuditLog, retention, verification, verifiers_for, verify_store
from proctor.audit.retention import delete_archived, write_segment
from proctor.clock import FrozenClock
from proctor.errors import AuditError, AuditIntegrityError
from proctor.keys import LocalSigner
from proctor.store import Store
from tests.audit.helpers import cut_at_20, record_many

_PAGE = 4


def _between_pages(monkeypatch: pytest.MonkeyPatch, module: Any, then: Callable[[], object],
                   *, after: int | None) -> list[int]:
    """``module``'s walk in pages of :data:`_PAGE`, ``then`` run (and committed) after
    its page ``after`` (None: after its last, before whatever is read next); the pages
    after which it ran."""
    real = module.iter_links
    ran: list[int] = []

    def walk(*args: Any, **kwargs: Any) -> Iterator[Any]:
        pages = 0
        for rows in real(*args, **{**kwargs, "page": _PAGE}):
            yield rows
            pages += 1
            if pages == after:
                then()
                ran.append(pages)
        if after is None:
            then()
            ran.append(pages)

    monkeypatch.setattr(module, "iter_links", walk)
    return ran


def test_a_deletion_chunk_committed_between_two_pages_is_not_a_gap(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = cut_at_20(audit, store, signer, clock, tmp_path / "one.jsonl")
    ran = _between_pages(monkeypatch, verification, after=1,
                         then=lambda: delete_archived(store, keys, chunk=10, most_chunks=1))
    report = verify_store(store, keys)
    assert ran == [1]
    assert report.is_valid, report.problem  # was `missing` at position 5
    assert (report.first_seq, report.last.seq, report.events) == (1, 26, 26)
    monkeypatch.undo()
    after = verify_store(store, keys)  # the chunk did commit
    assert after.is_valid and after.first_seq == 11


@pytest.mark.parametrize("after", [1, None], ids=["between-pages", "after-the-last-page"])
def test_events_appended_during_the_walk_are_not_seen_by_any_of_it(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch, after: int | None
) -> None:
    record_many(audit, clock, 25)  # checkpoints at 10 and 20 (every 10)
    keys = verifiers_for([signer])
    # ten more past a checkpoint's position (30): between two pages the checkpoints were
    # read without it (`checkpoint_missing`), after the last page the head was read at 35
    # (`truncated`)
    ran = _between_pages(monkeypatch, verification, after=after,
                         then=lambda: record_many(audit, clock, 10))
    report = verify_store(store, keys, checkpoint_every=10)  # the writer's spacing
    assert ran == [1 if after == 1 else 7]
    assert report.is_valid, report.problem
    assert (report.first_seq, report.last.seq, report.events) == (1, 25, 25)
    assert (report.checkpoints, report.unsigned_tail) == (2, 5)
    monkeypatch.undo()
    later = verify_store(store, keys, checkpoint_every=10)
    assert later.is_valid and (later.last.seq, later.checkpoints) == (35, 3)


def test_an_archive_whose_walk_a_deletion_chunk_crosses_is_refused_as_busy_not_broken(
    audit: AuditLog, store: Store, signer: LocalSigner, clock: FrozenClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = cut_at_20(audit, store, signer, clock, tmp_path / "one.jsonl")
    delete_archived(store, keys, chunk=5, most_chunks=1)  # the chain starts at 6
    _between_pages(monkeypatch, retention, after=1,
                   then=lambda: delete_archived(store, keys, chunk=10, most_chunks=1))
    with pytest.raises(AuditError) as refused:
        write_segment(store, tmp_path / "two.jsonl", up_to_seq=26, signer=signer,
                      clock=clock, verifiers=keys)
    # the events below the cut are being deleted: archive again once they are gone
    # (was `refusing to archive: events at positions 10 to 15 are missing`, an
    # integrity failure)
    assert not isinstance(refused.value, AuditIntegrityError), refused.value
    assert "being deleted" in str(refused.value)
    assert not (tmp_path / "two.jsonl").exists()
