"""A process that writes a burst of audit events from several threads.

Usage: PROCTOR_MASTER_KEY=... python -m tests.audit.burst_writer DATABASE_URL THREADS HOME

Checkpoints are signed by the issuer keyring in the store, as in a deployment.

It prints ``ready``, then one line per event id, each only after
``AuditLog.record`` returned for it (so: after the event was durable), and
keeps going until it is killed.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from proctor.audit import AuditLog
from proctor.clock import FrozenClock
from proctor.grants import IssuerKeyring, load_master_key
from proctor.store import open_store
from tests.audit.helpers import agent_event


def main() -> None:
    url, threads, home = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    store = open_store(url)
    clock = FrozenClock(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    keyring = IssuerKeyring(store, clock, load_master_key(home))
    audit = AuditLog(store, signer=keyring, clock=clock, checkpoint_every=50)
    out = threading.Lock()
    print("ready", flush=True)

    def burst(worker: int) -> None:
        n = 0
        while True:
            n += 1
            recorded = audit.record(agent_event(clock, worker * 1_000_000 + n))
            with out:
                sys.stdout.write(recorded.event_id + "\n")
                sys.stdout.flush()

    for worker in range(threads):
        threading.Thread(target=burst, args=(worker,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
