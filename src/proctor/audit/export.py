"""Exporting the log: JSON Lines (re-verifiable) or OCSF 1.3.0 JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from proctor.audit.ocsf import to_ocsf
from proctor.audit.query import EventFilter, iter_events
from proctor.store import Store

__all__ = ["EXPORT_FORMATS", "export_lines"]

EXPORT_FORMATS = ("jsonl", "ocsf")


def _line(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def export_lines(store: Store, fmt: str, where: EventFilter | None = None, *,
                 product_version: str = "") -> Iterator[str]:
    """One JSON document per matching event, in chain order.

    ``jsonl`` lines are ``{"seq", "prev_hash", "hash", "event"}``: the
    canonical JSON of ``event`` is the hashed body, so an unfiltered export
    can be re-verified offline. ``ocsf`` lines are OCSF API Activity events.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format `{fmt}` is not one of {', '.join(EXPORT_FORMATS)}")
    for stored in iter_events(store, where or EventFilter()):
        if fmt == "jsonl":
            yield _line(stored.as_json())
        else:
            yield _line(to_ocsf(stored.seq, stored.hash, stored.prev_hash, stored.event,
                                product_version=product_version))
