"""Audit streaming to a collector: every event arrives at least once, in order, across a
collector that stops and comes back, with the cursor kept in proctor's database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from proctor.audit import (
    ActorType,
    AuditLog,
    AuditStream,
    EventFilter,
    HttpSink,
    SyslogSink,
    human_event,
    read_cursor,
)
from proctor.clock import FrozenClock
from proctor.errors import AuditDeliveryError
from proctor.store import Store
from proctor.store.tables import audit_head
from tests.audit.helpers import record_many
from tests.audit.receivers import HttpReceiver, Received, SyslogReceiver, free_port


@contextmanager
def running(stream: AuditStream) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=stream.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def wait_until(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Wait (bounded) for another thread to make ``condition`` true."""
    changed = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        changed.wait(0.01)


def head_of(store: Store) -> int:
    with store.reading() as conn:
        return int(conn.execute(select(audit_head.c.seq)).scalar_one())


def in_order_once_each(seqs: list[int]) -> list[int]:
    """The first arrival of each seq, which must be in chain order."""
    seen: list[int] = []
    for seq in seqs:
        if seq not in seen:
            seen.append(seq)
    assert seen == sorted(seen), "events arrived out of order"
    return seen


def test_syslog_delivery_survives_a_collector_restart_and_resumes_from_its_cursor(
        store: Store, audit: AuditLog, clock: FrozenClock) -> None:
    received, port = Received(), free_port()
    receiver = SyslogReceiver(port, received).start()
    stream = AuditStream(store, SyslogSink("127.0.0.1", port, hostname="node-1"), clock,
                         name="siem", batch_size=7, poll_seconds=0.02,
                         max_backoff_seconds=0.2)
    record_many(audit, clock, 30)
    with running(stream):
        received.wait_for(30)
        receiver.stop()
        record_many(audit, clock, 25)  # written while the collector is down
        wait_until(lambda: stream.failures >= 1)  # the stream met the outage
        receiver = SyslogReceiver(port, received).start()
        received.wait_for(55)
    receiver.stop()
    stream.sink.close()
    assert in_order_once_each(received.seqs) == list(range(1, 56))
    assert read_cursor(store, "siem") == 55
    # the cursor is the database's: a new process resumes there and re-sends nothing
    again = AuditStream(store, SyslogSink("127.0.0.1", port), clock, name="siem")
    assert again.deliver_once() == 0  # caught up: it never connects


def test_a_syslog_message_is_rfc_5424_with_the_ocsf_event(
        store: Store, audit: AuditLog, clock: FrozenClock) -> None:
    received, port = Received(), free_port()
    receiver = SyslogReceiver(port, received).start()
    record_many(audit, clock, 1)
    sink = SyslogSink("127.0.0.1", port, hostname="node-1")
    AuditStream(store, sink, clock, name="s").catch_up()
    received.wait_for(1)
    sink.close()
    receiver.stop()
    [message] = receiver.messages
    header, body = message.split(b'"] ', 1)
    assert header.startswith(b"<110>1 ")  # facility 13 (log audit), informational
    assert b" node-1 proctor - tool:git/git_log [" in header
    assert b'[proctor@32473 seq="1' in header
    assert body.startswith(b'{"') and b'"class_uid":6003' in body


@pytest.mark.parametrize("shape", ["json", "splunk_hec"])
def test_http_delivery_retries_until_acknowledged_and_keeps_order(
        store: Store, audit: AuditLog, clock: FrozenClock, shape: str) -> None:
    received, port = Received(), free_port()
    failing = threading.Event()
    failing.set()
    receiver = HttpReceiver(port, received, status=lambda: 503 if failing.is_set() else 200)
    receiver.start()
    sink = HttpSink(f"http://127.0.0.1:{port}/collect", shape=shape,  # type: ignore[arg-type]
                    token="hec-token-123", hostname="node-1")
    stream = AuditStream(store, sink, clock, name=f"http-{shape}", batch_size=10,
                         poll_seconds=0.02, max_backoff_seconds=0.2)
    record_many(audit, clock, 12)
    with pytest.raises(AuditDeliveryError, match="answered 503"):
        stream.deliver_once()
    assert read_cursor(store, f"http-{shape}") == 0
    with running(stream):
        failing.clear()
        received.wait_for(12)
        receiver.stop()
        record_many(audit, clock, 8)
        receiver = HttpReceiver(port, received).start()
        received.wait_for(20)
    receiver.stop()
    sink.close()
    assert in_order_once_each(received.seqs) == list(range(1, 21))
    assert read_cursor(store, f"http-{shape}") == 20
    scheme = "Splunk" if shape == "splunk_hec" else "Bearer"
    assert received.headers[0]["Authorization"] == f"{scheme} hec-token-123"
    if shape == "splunk_hec":
        first = received.bodies[0][0]
        assert (first["source"], first["host"]) == ("proctor", "node-1")
        assert first["event"]["class_uid"] == 6003
    assert "hec-token-123" not in repr(sink)


def test_a_new_stream_may_start_at_the_head_and_a_filter_selects_events(
        store: Store, audit: AuditLog, clock: FrozenClock) -> None:
    received, port = Received(), free_port()
    receiver = HttpReceiver(port, received).start()
    record_many(audit, clock, 5)
    sink = HttpSink(f"http://127.0.0.1:{port}/", hostname="n")
    late = AuditStream(store, sink, clock, name="late", start="end")
    assert late.catch_up() == 0
    record_many(audit, clock, 3)
    assert late.catch_up() == 3
    nothing = AuditStream(store, sink, clock, name="humans",
                          where=EventFilter(actor_type=ActorType.HUMAN))
    assert nothing.catch_up() == 0
    receiver.stop()
    sink.close()
    assert received.seqs == [6, 7, 8]


def test_a_filtered_stream_moves_its_cursor_past_the_events_its_filter_skips(
        store: Store, audit: AuditLog, clock: FrozenClock) -> None:
    """Its next look starts after what it looked through, not at its last match: the
    events it skipped are not read again on every poll."""
    received, port = Received(), free_port()
    receiver = HttpReceiver(port, received).start()
    sink = HttpSink(f"http://127.0.0.1:{port}/", hostname="n")
    humans = AuditStream(store, sink, clock, name="humans", batch_size=2,
                         where=EventFilter(actor_type=ActorType.HUMAN))
    record_many(audit, clock, 5)
    assert humans.catch_up() == 0
    assert read_cursor(store, "humans") == head_of(store)  # looked through, none matched
    approvals = [audit.record(human_event("alice@acme.example", "approval.grant",
                                          'Tool::"git/git_push"', "approved",
                                          now=clock.now())).seq for _ in range(3)]
    record_many(audit, clock, 4)
    assert humans.deliver_once() == 2  # a full batch: the cursor at its last event
    assert read_cursor(store, "humans") == approvals[1]
    assert humans.deliver_once() == 1  # the rest: the cursor past what it looked through
    assert read_cursor(store, "humans") == head_of(store) > approvals[-1]
    assert humans.deliver_once() == 0
    receiver.stop()
    sink.close()
    assert received.seqs == approvals
