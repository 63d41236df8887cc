"""The compliance report: every mapping entry with its evidence, and the gaps.

>>> report = build_report(sources, since=since, until=until)   # doctest: +SKIP
>>> report.as_json()["summary"]                                  # doctest: +SKIP
{'entries': 28, 'evidenced': 26, 'without_evidence': 2, 'gaps': 4}

An entry is ``evidenced`` when at least one of its queries counted something in
the window, ``no_evidence`` otherwise (listed with the gaps: a control that did not
act in the window may be fine, or may be missing — the report says which it cannot
tell). The report names the signed checkpoint that covers every event it cites;
:func:`proctor.oversight.compliance.bundle.make_bundle` packs the proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proctor.audit import AuditEvent, AuditLog, Checkpoint, load_checkpoints
from proctor.audit.events import format_time
from proctor.clock import Clock
from proctor.identity import AgentRegistry
from proctor.keys import SignerSource
from proctor.oversight.compliance.evidence import QUERIES, Evidence, gather_evidence
from proctor.oversight.compliance.gaps import Gap, find_gaps
from proctor.oversight.compliance.mapping import FRAMEWORKS, MappingEntry, load_mapping
from proctor.oversight.milestones import checkpoint_with_event
from proctor.policy import PolicyEngine, PolicyStore
from proctor.store import Store

__all__ = ["REPORT_TYPE", "ComplianceReport", "ReportSources", "build_report"]

REPORT_TYPE = "proctor.compliance.report"


@dataclass(frozen=True, slots=True)
class ReportSources:
    """The parts a report reads (the runtime's, passed down)."""

    store: Store
    engine: PolicyEngine
    policies: PolicyStore
    registry: AgentRegistry
    clock: Clock
    # to sign a checkpoint that covers the citations: the keys, and the audit log and the
    # ``audit.checkpoint`` event (its target and detail filled in) it is stored with
    keys: SignerSource | None = None
    audit: AuditLog | None = None
    checkpointing: AuditEvent | None = None


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    generated_at: datetime
    since: datetime
    until: datetime
    entries: list[MappingEntry]
    evidence: dict[str, Evidence]
    gaps: list[Gap]
    checkpoint: Checkpoint | None

    def cited(self) -> list[dict[str, Any]]:
        """Every example event the report cites, once, by position."""
        seen: dict[int, dict[str, Any]] = {}
        for found in self.evidence.values():
            for example in found.examples:
                seen[example.seq] = example.as_json()
        return [seen[seq] for seq in sorted(seen)]

    def as_json(self) -> dict[str, Any]:
        entries = []
        for entry in self.entries:
            found = [self.evidence[q].as_json() for q in entry.evidence]
            status = "evidenced" if any(f["count"] for f in found) else "no_evidence"
            entries.append({**entry.as_json(), "status": status, "evidence": found})
        evidenced = sum(1 for e in entries if e["status"] == "evidenced")
        return {
            "type": REPORT_TYPE, "v": 1,
            "generated_at": format_time(self.generated_at),
            "window": {"since": format_time(self.since), "until": format_time(self.until)},
            "frameworks": FRAMEWORKS,
            "summary": {"entries": len(entries), "evidenced": evidenced,
                        "without_evidence": len(entries) - evidenced, "gaps": len(self.gaps),
                        "cited_events": len(self.cited())},
            "entries": entries,
            "gaps": [g.as_json() for g in self.gaps],
            "checkpoint": None if self.checkpoint is None else {
                "seq": self.checkpoint.seq, "hash": self.checkpoint.hash,
                "kid": self.checkpoint.kid,
                "signed_at": format_time(self.checkpoint.signed_at)},
        }


def build_report(sources: ReportSources, *, since: datetime, until: datetime,
                 grant_threshold_seconds: int = 3600) -> ComplianceReport:
    """The report for ``[since, until)`` from the store as it is now.

    With ``sources.keys`` the head is checkpointed now, so the checkpoint covers
    every cited event, stored with its ``audit.checkpoint`` event
    (``sources.checkpointing``) in one transaction of ``sources.audit``
    (:func:`~proctor.oversight.milestones.checkpoint_with_event`: if the event cannot
    be written, no checkpoint is stored and
    :class:`~proctor.errors.AuditUnavailableError` is raised); without, the first
    existing checkpoint at or after the last cited event is named (None when there is
    none yet).
    """
    if since >= until:
        raise ValueError("the report's window must start before it ends")
    if sources.keys is not None and (sources.audit is None or sources.checkpointing is None):
        raise ValueError("a report that signs a checkpoint needs the audit log and its event")
    entries = load_mapping(queries=frozenset(QUERIES))
    evidence = gather_evidence(sources.store, since, until)
    gaps = find_gaps(sources.store, sources.engine, sources.policies, sources.registry,
                     since, until, grant_threshold_seconds=grant_threshold_seconds)
    last = max((x.seq for f in evidence.values() for x in f.examples), default=0)
    checkpoint: Checkpoint | None = None
    if sources.keys is not None:
        assert sources.audit is not None and sources.checkpointing is not None  # checked
        checkpoint = checkpoint_with_event(sources.audit, sources.keys, sources.checkpointing)
    if checkpoint is None or checkpoint.seq < last:
        checkpoint = next((c for c in load_checkpoints(sources.store) if c.seq >= last), None)
    return ComplianceReport(sources.clock.now(), since, until, entries, evidence, gaps,
                            checkpoint)
