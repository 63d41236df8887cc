"""The tamper-evident audit log: hash-chained events, signed checkpoints, group commit.

>>> from proctor.audit import AuditLog, decide_and_record   # doctest: +SKIP
>>> with AuditLog(store, signer=keyring) as audit:           # doctest: +SKIP
...     decision = decide_and_record(engine, audit, request)

See ``docs/audit.md`` for the event schema, the chain, verification,
retention and the OCSF mapping.
"""

from proctor.audit.attribution import Attribution
from proctor.audit.chain import GENESIS_HASH, ChainHead, canonical_json, chain_hash
from proctor.audit.checkpoint_chain import write_checkpoint
from proctor.audit.checkpoints import (
    Checkpoint,
    load_checkpoints,
    read_kept_checkpoints,
    sign_checkpoint,
    verifiers_for,
)
from proctor.audit.driver import EventRow
from proctor.audit.events import (
    SCHEMA_VERSION,
    Actor,
    ActorType,
    AuditEvent,
    DecisionRecord,
    StoredEvent,
    new_event_id,
)
from proctor.audit.export import EXPORT_FORMATS, export_lines
from proctor.audit.masking import mask, mask_text
from proctor.audit.ocsf import OCSF_VERSION, to_ocsf
from proctor.audit.query import (
    EventFilter,
    follow_events,
    iter_events,
    search_events,
    tail_events,
)
from proctor.audit.recording import (
    decide_and_record,
    decision_event,
    human_event,
    record_change,
)
from proctor.audit.retention import archive_segment, verify_archive
from proctor.audit.sinks import (
    HttpSink,
    Sink,
    SyslogSink,
    sink_for,
    syslog_frame,
)
from proctor.audit.streaming import AuditStream, read_cursor
from proctor.audit.verification import Problem, VerifyReport, verify_store
from proctor.audit.writer import (
    AuditLog,
    BatchObserver,
    ChainedRows,
    Effects,
    Receipt,
    RecordedEvent,
    WriteCursor,
)

__all__ = [
    "EXPORT_FORMATS",
    "GENESIS_HASH",
    "OCSF_VERSION",
    "SCHEMA_VERSION",
    "Actor",
    "ActorType",
    "Attribution",
    "AuditEvent",
    "AuditLog",
    "AuditStream",
    "BatchObserver",
    "ChainHead",
    "ChainedRows",
    "Checkpoint",
    "DecisionRecord",
    "Effects",
    "EventFilter",
    "EventRow",
    "HttpSink",
    "Problem",
    "Receipt",
    "RecordedEvent",
    "Sink",
    "StoredEvent",
    "SyslogSink",
    "VerifyReport",
    "WriteCursor",
    "archive_segment",
    "canonical_json",
    "chain_hash",
    "decide_and_record",
    "decision_event",
    "export_lines",
    "follow_events",
    "human_event",
    "iter_events",
    "load_checkpoints",
    "mask",
    "mask_text",
    "new_event_id",
    "read_cursor",
    "read_kept_checkpoints",
    "record_change",
    "search_events",
    "sign_checkpoint",
    "sink_for",
    "syslog_frame",
    "tail_events",
    "to_ocsf",
    "verifiers_for",
    "verify_archive",
    "verify_store",
    "write_checkpoint",
]
