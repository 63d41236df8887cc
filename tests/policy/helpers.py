"""Building engines for policy tests from small inline catalogs and policy texts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from proctor.policy import (
    DecisionRequest,
    EntityRef,
    PolicyEngine,
    ToolCatalog,
    ToolSpec,
    call_context,
)
from proctor.policy.catalog import Sensitivity
from proctor.policy.entities import principal_entities

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
CODER = "spiffe://acme.example/agent/coder"
OTHER = "spiffe://acme.example/agent/other"

CATALOG = ToolCatalog([
    ToolSpec("git", "git_log", input_schema={
        "type": "object",
        "properties": {"repo_path": {"type": "string"}, "max_count": {"type": "integer"}},
        "required": ["repo_path"],
    }),
    ToolSpec("pay", "create_payment", sensitivity=Sensitivity.RESTRICTED, input_schema={
        "type": "object",
        "properties": {"amount_cents": {"type": "integer"}, "tags": {"type": "array",
                       "items": {"type": "string"}}, "ratio": {"type": "number"}},
        "required": ["amount_cents"],
    }),
])

PRINCIPALS = principal_entities({
    "humans": [{"id": "alice"}],
    "groups": [{"id": "coders"}],
    "agents": [
        {"id": CODER, "owner": "alice", "groups": ["coders"]},
        {"id": OTHER, "owner": "alice", "trust_state": "drifted", "risk_score": 50},
    ],
})


def engine_with(policies: str | None, catalog: ToolCatalog = CATALOG) -> PolicyEngine:
    engine = PolicyEngine(catalog, PRINCIPALS)
    if policies is not None:
        engine.activate(engine.compile({"test.cedar": policies}, revision=1))
    return engine


def call(tool: str, args: dict[str, Any], agent: str = CODER, **context: Any) -> DecisionRequest:
    return DecisionRequest(
        EntityRef("Agent", agent), f"tool:{tool}", EntityRef("Tool", tool),
        call_context(now=NOW, args=args, **context),
    )
