"""A long audit log written fast, through the writer's own connection.

Recording hundreds of thousands of events one by one through :class:`AuditLog` takes
minutes on a busy machine; :func:`append_many` writes them in large batches through the
same :class:`~proctor.audit.driver.AppendConnection` the writer uses (its inserts, its
keys, its head), each event a copy of one real event with its own id, time and target,
and signs a checkpoint at every multiple of ``every`` as the writer does. The result
verifies as any log the writer wrote (the tests that use it check that first).
"""

from __future__ import annotations

from datetime import timedelta
from hashlib import sha256

from proctor.audit.chain import ChainHead
from proctor.audit.checkpoint_chain import continue_from, insert_checkpoint
from proctor.audit.checkpoints import sign_checkpoint
from proctor.audit.driver import KEYS_MOST, AppendConnection, EventRow, WriteCursor
from proctor.audit.events import format_time
from proctor.clock import FrozenClock
from proctor.keys import LocalSigner, Verifier, verifiers_for
from proctor.store import Store
from tests.audit.helpers import agent_event


def append_many(store: Store, signer: LocalSigner, clock: FrozenClock, count: int, *,
                every: int = 10_000, batch: int = KEYS_MOST) -> ChainHead:
    """Append ``count`` agent events (a second apart, from ``clock``'s time on); the new
    head. The clock ends at the last event's time."""
    model = agent_event(clock, 0)
    body, time_text = model.canonical_body_and_time()
    text = body.decode("utf-8")
    target = 'git_log#0\\"'
    assert text.count(model.id) == 1 and text.count(target) == 1
    assert text.count(time_text) == 1
    start = model.time
    conn = AppendConnection(store)
    verifiers = verifiers_for([signer])
    done = 0
    head = conn.read_head()
    try:
        while done < count:
            size = min(batch, count - done)

            def build(tx: WriteCursor, at: ChainHead, first: int = done, size: int = size
                      ) -> tuple[list[EventRow], None, list[str]]:
                rows: list[EventRow] = []
                times: list[str] = []
                seq, prev = at
                link = bytes.fromhex(prev)
                for n in range(first, first + size):
                    when = start + timedelta(seconds=n)
                    stamp = format_time(when)
                    event_id = f"{model.id[:24]}{n:012x}"
                    line = (text.replace(model.id, event_id)
                            .replace(target, f'git_log#{n}\\"').replace(time_text, stamp))
                    seq += 1
                    link = sha256(link + line.encode("utf-8")).digest()
                    rows.append(EventRow(seq, event_id, when, model.actor.type.value,
                                         model.actor.id, model.task, model.action, "allow",
                                         line, prev, link.hex()))
                    times.append(stamp)
                    prev = link.hex()
                _sign(tx, at, rows, signer, verifiers, every, clock)
                return rows, None, times

            moved = conn.append(head, build)
            assert moved is not None
            head, done = moved, done + size
    finally:
        conn.close()
    clock.advance(seconds=count - 1)
    return head


def _sign(tx: WriteCursor, at: ChainHead, rows: list[EventRow], signer: LocalSigner,
          verifiers: dict[str, Verifier], every: int, clock: FrozenClock) -> None:
    """A checkpoint at each multiple of ``every`` among ``rows``, as the writer signs."""
    due = (at.seq // every + 1) * every
    if due > rows[-1].seq:
        return
    prev, wrong = continue_from(tx.rows, verifiers, at=due, every=every)
    assert wrong is None, wrong
    now = clock.now()
    while due <= rows[-1].seq:
        prev = sign_checkpoint(signer, ChainHead(due, rows[due - at.seq - 1].hash), now,
                               prev=prev, every=every)
        insert_checkpoint(tx.execute, prev, tx.time(now))
        due += every
