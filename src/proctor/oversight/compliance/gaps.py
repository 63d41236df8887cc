"""Gaps: what the state shows is missing or weaker than a control asks.

- ``tool_without_policy``: a tool in the catalog whose action no active policy names;
- ``agent_not_reviewed``: a drifted agent whose presented manifest no human reviewed;
- ``long_grant``: a grant issued in the window that lives longer than the threshold;
- ``approval_by_owner``: an approval decided by the human the agent acted for;
- ``not_measured``: a control proctor holds no data for on this deployment (tool
  pinning, where secrets live outside proctor): said, never silently passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from proctor.identity import AgentRegistry
from proctor.identity.agent import TrustState
from proctor.policy import PolicyEngine, PolicyStore
from proctor.store import Store, as_utc
from proctor.store.tables import approvals, leases

__all__ = ["Gap", "find_gaps"]


@dataclass(frozen=True, slots=True)
class Gap:
    kind: str
    subject: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


def find_gaps(store: Store, engine: PolicyEngine, policies: PolicyStore,
              registry: AgentRegistry, since: datetime, until: datetime, *,
              grant_threshold_seconds: int = 3600) -> list[Gap]:
    """Every gap the store and the active policies show, in a stable order."""
    gaps: list[Gap] = []
    active = policies.active_revision()
    text = "\n".join(policies.sources(active.id).values()) if active is not None else ""
    for tool in sorted(engine.catalog, key=lambda t: t.action_id):
        if f'"{tool.action_id}"' not in text:
            gaps.append(Gap("tool_without_policy", tool.tool_id,
                            f"no active policy names `Action::\"{tool.action_id}\"`"))
    for agent in registry.list_agents():
        if agent.trust_state is TrustState.DRIFTED:
            gaps.append(Gap("agent_not_reviewed", agent.id,
                            "its presented manifest differs from the reviewed one and "
                            "no human has reviewed it"))
    with store.transaction() as conn:
        granted = conn.execute(select(leases.c.id, leases.c.agent_id, leases.c.created_at,
                                      leases.c.expires_at)
                               .where(leases.c.kind == "grant",
                                      leases.c.created_at >= since,
                                      leases.c.created_at < until)).all()
        decided = conn.execute(select(approvals.c.id, approvals.c.decided_by,
                                      approvals.c.on_behalf_of, approvals.c.agent_id)
                               .where(approvals.c.decided_at >= since,
                                      approvals.c.decided_at < until)).all()
    for row in granted:
        if row.expires_at is None:
            continue
        lifetime = (as_utc(row.expires_at) - as_utc(row.created_at)).total_seconds()
        if lifetime > grant_threshold_seconds:
            gaps.append(Gap("long_grant", row.id,
                            f"grant of `{row.agent_id}` lives {int(lifetime)} s, over "
                            f"{grant_threshold_seconds} s"))
    owners = {a.id: a.owner for a in registry.list_agents()}
    for row in decided:
        if row.decided_by and row.decided_by in (row.on_behalf_of, owners.get(row.agent_id)):
            gaps.append(Gap("approval_by_owner", row.id,
                            f"decided by `{row.decided_by}`, for whom the agent acted"))
    gaps.append(Gap("not_measured", "tool pinning",
                    "this deployment keeps no reviewed tool definitions to check servers "
                    "against"))
    gaps.append(Gap("not_measured", "plaintext secrets",
                    "secrets proctor holds are sealed; secrets configured outside proctor "
                    "(an upstream's own environment) are not visible to it"))
    return gaps

