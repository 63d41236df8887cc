"""Tools discovered at run time, kept in the store so every process knows them.

A gateway learns an upstream's tools when it connects (``tools/list``) and extends
its own engine. Other processes — ``proctor serve`` issuing grants, another gateway
deciding a call under a grant issued for such a tool — must know the same tool
with the same labels and schema, or they would refuse what was rightly granted,
or worse, decide it against another schema. So each discovered tool is recorded
once, first writer wins, and a process that meets a tool it does not know reads
the stored ones before it answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from proctor.clock import Clock
from proctor.errors import ConfigError, PolicyValidationError, StoreError
from proctor.policy.catalog import Sensitivity, ToolSpec
from proctor.policy.engine import PolicyEngine
from proctor.store import Store
from proctor.store.tables import tool_catalog

__all__ = ["KnownTools"]

log = logging.getLogger(__name__)


class KnownTools:
    """The stored part of the tool catalog: what any process discovered."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def record(self, tools: Iterable[ToolSpec]) -> None:
        """Store the tools not stored yet; a tool already stored keeps its first record."""
        now = self._clock.now()
        for tool in tools:
            try:
                with self._store.transaction() as conn:
                    if conn.execute(select(tool_catalog.c.tool_id).where(
                            tool_catalog.c.tool_id == tool.tool_id)).first() is None:
                        conn.execute(insert(tool_catalog).values(
                            tool_id=tool.tool_id, server=tool.server, spec=_spec(tool),
                            first_seen_at=now))
            except StoreError as exc:
                if not isinstance(exc.__cause__, IntegrityError):  # another process won
                    raise

    def load(self) -> list[ToolSpec]:
        with self._store.reading() as conn:
            rows = conn.execute(select(tool_catalog).order_by(tool_catalog.c.tool_id)).all()
        tools = []
        for row in rows:
            try:
                tools.append(_tool(row.server, row.tool_id, row.spec))
            except (ConfigError, KeyError, TypeError, ValueError):
                log.error("stored tool `%s` is not valid; left out", str(row.tool_id)[:200])
        return tools

    def teach(self, engine: PolicyEngine) -> bool:
        """Extend ``engine`` with the stored tools it does not know; True if it learnt any.

        A stored tool the engine already knows keeps the engine's own entry (its
        bundle's labels win), also one it came to know after the stored ones were read
        (another thread's: the gateway's own definition, another teach): the engine
        adds only what it does not know when it changes. If the policies do not
        validate with the new tools, the engine is left as it was: those tools stay
        unknown and are denied.
        """
        new = [t for t in self.load() if engine.catalog.by_action(t.action_id) is None]
        if not new:
            return False
        try:
            return engine.extend_catalog(new, keep_known=True)
        except PolicyValidationError as exc:
            log.error("policies do not validate with the stored tools (%s); calls to them "
                      "are denied", exc.message)
            return False


def _spec(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "sensitivity": tool.sensitivity.name.lower(),
            "destination": tool.destination, "connector": tool.connector,
            "input_schema": dict(tool.input_schema)}


def _tool(server: str, tool_id: str, spec: dict[str, Any]) -> ToolSpec:
    tool = ToolSpec(server=server, name=str(spec["name"]),
                    sensitivity=Sensitivity.parse(str(spec["sensitivity"])),
                    destination=str(spec["destination"]), connector=spec.get("connector"),
                    input_schema=dict(spec.get("input_schema") or {}))
    if tool.tool_id != tool_id:
        raise ValueError("tool id does not match its spec")
    return tool
