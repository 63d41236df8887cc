"""Access paths: which agent can reach which tool, connector and data, and through what.

A path is agent → (live grants, with their delegations) → tool → connector → data
sensitivity. Whether the agent can reach the tool is answered by **Cedar's partial
evaluation** of the active policies, the same policies, entities and slice the
decision point evaluates, with the call's context left unknown (arguments, task,
time, sensitivity seen — what only a call can tell):

- ``always``: Cedar allows whatever the context (the permits that allow it are
  named; ``needs_approval`` when one of them carries ``@approval``);
- ``conditional``: some permit can allow it for some calls; the permits whose
  conditions are still open are named: the call's arguments and context decide.
  ``needs_approval`` when one of them carries ``@approval``, or when a forbid with
  ``@approval`` ("forbid unless a human approves", e.g. a risky agent's) is still
  open too: it is named with them, since it is what holds such a call;
- no path: no context makes Cedar allow it (nothing permits it, or a forbid that
  holds whatever the context).

Nothing here re-implements a policy: the conditions are Cedar's own residuals.
A path is a preview, never a decision: each call is still decided in full. A tool
that needs a grant is reached only while one is live; the live grants that name it
are listed per path (``grants``), with the agent each was delegated by.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import cedarpy
from sqlalchemy import select

from proctor.errors import ProctorError, ScopeError
from proctor.grants import GrantScope, in_force
from proctor.identity import AgentRegistry
from proctor.policy import PolicyEngine, ToolSpec, load_bundle
from proctor.policy.model import quote_id
from proctor.store import Store
from proctor.store.tables import grants, leases

__all__ = ["AccessPath", "LiveGrant", "Reach", "access_paths", "known_agents", "live_grants",
           "reach"]

Reach = Literal["always", "conditional", "none"]


@dataclass(frozen=True, slots=True)
class LiveGrant:
    """A grant that is neither revoked nor expired, and the agent it came from."""

    grant_id: str
    agent_id: str
    task_id: str
    delegated_by: str | None
    scope: GrantScope


@dataclass(frozen=True, slots=True)
class AccessPath:
    agent_id: str
    tool: ToolSpec
    reach: Reach
    # the permits that allow it (always) or may (conditional), and the forbids with
    # @approval that may hold a call for a human (conditional)
    policy_ids: tuple[str, ...]
    needs_approval: bool
    grants: tuple[LiveGrant, ...]

    @property
    def connector(self) -> str | None:
        return self.tool.connector

    def as_json(self) -> dict[str, Any]:
        return {"agent": self.agent_id, "tool": self.tool.tool_id, "server": self.tool.server,
                "connector": self.tool.connector,
                "sensitivity": self.tool.sensitivity.name.lower(),
                "reach": self.reach, "policies": list(self.policy_ids),
                "needs_approval": self.needs_approval,
                "grants": [{"grant": g.grant_id, "task": g.task_id,
                            "delegated_by": g.delegated_by} for g in self.grants]}


def reach(engine: PolicyEngine, agent_id: str, tool: ToolSpec
          ) -> tuple[Reach, tuple[str, ...], bool]:
    """Whether ``agent_id`` can reach ``tool`` under the active policies, which permits
    allow it, and whether one of them asks for an approval (Cedar's partial evaluation,
    the call's context unknown)."""
    policies = engine.active
    if policies is None:
        return "none", (), False
    action = f"tool:{tool.tool_id}"
    resource = f"Tool::{quote_id(tool.tool_id)}"
    result = cedarpy.is_authorized_partial(
        {"principal": f"Agent::{quote_id(agent_id)}", "action": f"Action::{quote_id(action)}",
         "resource": resource},
        policies.slice_for(action, resource), engine.entities.handle)
    located = policies.policies

    def approval(ids: Iterable[str]) -> bool:
        return any("approval" in located[i].annotations for i in ids if i in located)

    if result.decision is cedarpy.Decision.Allow:
        ids = tuple(sorted(result.diagnostics.reasons))
        return "always", ids, approval(ids)
    if result.decision is cedarpy.Decision.Deny or not result.residuals:
        return "none", (), False
    open_ids = {pid: str(residual.get("effect")) for pid, residual in result.residuals.items()
                if not _never(residual)}
    open_permits = tuple(sorted(pid for pid, effect in open_ids.items() if effect == "permit"))
    if not open_permits:
        return "none", (), False
    holding = tuple(sorted(pid for pid, effect in open_ids.items()
                           if effect == "forbid" and approval([pid])))
    return ("conditional", tuple(sorted(open_permits + holding)),
            approval(open_permits) or bool(holding))


def _never(residual: dict[str, Any]) -> bool:
    """A residual whose condition Cedar reduced to false: it cannot apply."""
    return any(c.get("kind") == "when" and c.get("body") == {"Value": False}
               for c in residual.get("conditions") or ())


def known_agents(registry: AgentRegistry, policy_dir: Path) -> list[str]:
    """Every agent policies can name: the registered ones and those of the bundle's
    ``entities.yaml``."""
    registered = {a.id for a in registry.list_agents()}
    try:
        bundled = {p["uid"]["id"] for p in load_bundle(policy_dir).principals
                   if p["uid"]["type"] == "Agent"}
    except ProctorError:
        bundled = set()
    return sorted(registered | bundled)


def live_grants(store: Store, *, now: datetime) -> list[LiveGrant]:
    """Every grant neither revoked (nor under a revoked node, marked yet or not) nor
    expired, with the agent of its parent grant."""
    live = in_force()
    with store.reading() as conn:
        rows = conn.execute(
            select(leases.c.id, leases.c.agent_id, leases.c.task_id, leases.c.parent_id,
                   grants.c.scope)
            .join(grants, grants.c.id == leases.c.id)
            .where(leases.c.id.in_(select(live.c.id)), leases.c.expires_at > now)).all()
        parents = {r.id: r.agent_id for r in conn.execute(
            select(leases.c.id, leases.c.agent_id).where(
                leases.c.id.in_({r.parent_id for r in rows if r.parent_id}))).all()}
    found = []
    for row in rows:
        try:
            scope = GrantScope.from_json(row.scope)
        except ScopeError:
            continue  # a scope no check would accept either
        parent = parents.get(row.parent_id) if row.parent_id else None
        found.append(LiveGrant(row.id, row.agent_id, row.task_id,
                               parent if parent and parent != row.agent_id else None, scope))
    return found


def access_paths(engine: PolicyEngine, agent_ids: Sequence[str], *,
                 grants_live: Sequence[LiveGrant] = (), agent: str | None = None,
                 tool: str | None = None, connector: str | None = None,
                 include_none: bool = False) -> list[AccessPath]:
    """The paths of ``agent_ids`` to every tool of the catalog (or those of ``agent``,
    to ``tool`` — a tool id or ``server/*`` — or to ``connector``)."""
    tools = [t for t in engine.catalog
             if (tool is None or t.tool_id == tool
                 or (tool.endswith("/*") and t.server == tool[:-2]))
             and (connector is None or t.connector == connector)]
    paths = []
    for agent_id in agent_ids:
        if agent is not None and agent_id != agent:
            continue
        held = [g for g in grants_live if g.agent_id == agent_id]
        for spec in sorted(tools, key=lambda t: t.tool_id):
            found, ids, approval = reach(engine, agent_id, spec)
            if found == "none" and not include_none:
                continue
            paths.append(AccessPath(agent_id, spec, found, ids, approval,
                                    tuple(g for g in held if g.scope.names(spec.tool_id))))
    return paths
