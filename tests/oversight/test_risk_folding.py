"""The audit writer folds each batch into the risk baselines in the batch's own
transaction: the registry has the new score when the event's writer returns, the
writer folds as the engine's catch-up would, events nobody folded are taken along
(a few) or left to the catch-up (many), and every event is folded once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, update

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, new_event_id
from proctor.oversight.risk import folding
from proctor.oversight.risk.baseline import new_baseline
from proctor.oversight.risk.written import BaselineText, dumps
from proctor.store import Store
from proctor.store.tables import agents, audit_head, risk_baselines
from tests.identity.factories import CODER

from .test_risk import Stream, stream  # noqa: F401  (the fixture)

OTHER = "spiffe://acme.example/agent/nobody"  # events of an agent nobody registered


def _cursor(store: Store) -> int:
    with store.transaction() as conn:
        return int(conn.execute(select(audit_head.c.folded)).scalar() or 0)


def _head(store: Store) -> int:
    with store.transaction() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar() or 0)


@pytest.fixture
def folded(stream: Stream) -> Iterator[Stream]:  # noqa: F811
    """The stream, written by an audit log whose batches the risk engine folds."""
    stream.audit.close()
    stream.audit = AuditLog(stream.store, clock=stream.clock)
    stream.audit.observe(stream.engine().folder())
    yield stream


def test_a_leaked_grant_is_in_the_registry_when_its_event_is_written(folded: Stream) -> None:
    folded.usual()
    assert folded.registry.get(CODER).risk_score == 0  # the prior is gone after warm-up
    folded.gateway("gateway.leak", found_in="arguments of crm/refund")
    agent = folded.registry.get(CODER)
    assert (agent.risk_score, agent.risk_factors) == (30, ("leaked_grant",))
    assert _cursor(folded.store) == _head(folded.store)
    engine = folded.engine()
    assert engine.catch_up() == {}  # nothing left to fold
    assert engine.view(CODER).calls == 30


def test_the_writer_folds_each_event_as_the_catch_up_would(folded: Stream) -> None:
    folded.usual()
    for _ in range(12):
        folded.call("crm/lookup", "deny")
    folded.call("web/fetch", args={"url": "https://evil.example/x"})
    folded.call("crm/refund", args={"amount_cents": 900_000})
    inline = folded.engine().view(CODER)
    with folded.store.transaction() as conn:  # forget it all, then fold from the log
        conn.execute(delete(risk_baselines))
        conn.execute(update(audit_head).values(folded=None))
        conn.execute(update(agents).values(risk_score=0, risk_factors=None))
    engine = folded.engine()
    assert engine.catch_up() == {CODER: inline.score}
    again = engine.view(CODER)
    assert inline.score >= 40
    assert [f.as_json() for f in again.factors] == [f.as_json() for f in inline.factors]
    assert (again.score, again.calls, again.prior) == (inline.score, inline.calls, inline.prior)


def test_events_no_writer_folded_are_taken_along_by_the_next_batch(stream: Stream) -> None:  # noqa: F811
    stream.usual(10)  # written by a log that does not fold (an operator command's, say)
    assert _cursor(stream.store) == 0
    stream.audit.close()
    stream.audit = AuditLog(stream.store, clock=stream.clock)
    stream.audit.observe(stream.engine().folder())
    stream.call("kb/search")
    assert _cursor(stream.store) == _head(stream.store)
    assert stream.engine().view(CODER).calls == 11
    assert stream.registry.get(CODER).risk_score == 5  # the prior, half faded


def test_more_events_than_a_batch_takes_along_are_left_to_the_catch_up(
        stream: Stream, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(folding, "MAX_GAP", 5)
    stream.usual(10)
    stream.audit.close()
    asked = threading.Event()
    engine = stream.engine()
    folder = folding.BatchFolder(stream.clock, engine.config,
                                 lambda tool: 0, behind=asked.set)
    stream.audit = AuditLog(stream.store, clock=stream.clock)
    stream.audit.observe(folder)
    stream.call("kb/search")
    assert asked.is_set()
    assert _cursor(stream.store) == 0  # nothing folded out of order
    assert stream.registry.get(CODER).risk_score == 0
    assert engine.catch_up() == {CODER: 5}
    stream.call("kb/search")  # caught up: folded by the writer again
    assert _cursor(stream.store) == _head(stream.store)
    assert engine.view(CODER).calls == 12


def test_the_mark_moves_with_the_head_in_the_writers_transaction(folded: Stream) -> None:
    for _ in range(3):
        folded.call("kb/search")
        assert _cursor(folded.store) == _head(folded.store)
    assert folded.engine().view(CODER).calls == 3


def test_a_mark_moved_behind_the_writers_back_is_read_again_not_trusted(folded: Stream) -> None:
    folded.usual(10)  # the writer's own batches left the mark at the head: it remembers
    with folded.store.transaction() as conn:  # say another process's catch-up said so
        conn.execute(update(audit_head).values(folded=None))
    folded.call("kb/search")
    # the batch built on the remembered mark was refused, and built again on the mark as
    # stored: every event after it was folded (again), none skipped
    assert _cursor(folded.store) == _head(folded.store)
    assert folded.engine().view(CODER).calls == 10 + 10 + 1


def test_the_catch_up_runs_in_the_background_when_asked(stream: Stream) -> None:  # noqa: F811
    stream.usual(10)
    engine = stream.engine()
    engine.catch_up_soon()
    thread = engine._catching_up
    assert thread is not None
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert _cursor(stream.store) == _head(stream.store)
    assert engine.view(CODER).calls == 10


def test_two_writers_fold_each_event_once(folded: Stream) -> None:
    other = AuditLog(folded.store, clock=folded.clock)
    other.observe(folded.engine().folder())
    try:
        for i in range(20):
            folded.call("kb/search")
            Stream(folded.store, folded.registry, other, folded.clock, folded.config
                   ).call("crm/lookup" if i % 2 else "kb/search")
    finally:
        other.close()
    assert _cursor(folded.store) == _head(folded.store)
    view = folded.engine().view(CODER)
    assert view.calls == 40
    assert view.score == 0  # warmed up; usual tools; nothing odd


def test_an_unregistered_agent_gets_a_baseline_and_no_agent_row(folded: Stream) -> None:
    now = folded.clock.now()
    folded.audit.record(AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, "proctor-gateway"),
        action="gateway.leak", target=f'Agent::"{OTHER}"', outcome="revoked",
        detail={"agent": OTHER, "found_in": "arguments of kb/search"}))
    assert folded.engine().view(OTHER).score == 40  # the prior 10 + leaked grant 30
    assert folded.registry.find(OTHER) is None
    assert folded.registry.get(CODER).risk_score == 0  # nobody else's row changed


@pytest.mark.parametrize("trend", [
    [], [[1796660431.565735, 10]], [[1796660431.5, 10], [1796660432.25, 9]],
    [[1796660431.5, True]], [[1796660431.5, 1.0]], [[1796660431, 1]], [[-0.0, 1]],
    [[0.0, 1]], [[float("nan"), 1]], [[float("inf"), 1]], [[1796660431.5, 1, 2]],
    [(1796660431.5, 1)], "not a list",
])
def test_a_baseline_is_written_as_json_dumps_writes_it_its_history_remembered(
        trend: object) -> None:
    baseline = {**new_baseline(), "trend": trend, "max_sensitivity": 2}
    twin = {**baseline, "trend": [[1796660431.5, 1]]}  # a history met before, and again
    texts = {id(baseline): BaselineText(baseline), id(twin): BaselineText(twin)}
    for document in (baseline, twin, baseline):
        written, whole = texts[id(document)].text(), dumps(document)
        # the same document (NaN as json.dumps writes it: compared as text)
        assert _sorted(written) == _sorted(whole)
        assert len(written) == len(whole)


def _sorted(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True)
