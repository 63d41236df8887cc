"""Gaps: what the state shows is missing or weaker than a control asks.

- ``tool_without_policy``: a tool in the catalog whose action no active policy names;
- ``agent_not_reviewed``: a drifted agent whose presented manifest no human reviewed;
- ``long_grant``: a grant issued in the window that lives longer than the threshold;
- ``approval_by_owner``: an approval decided by the human the agent acted for;
- ``server_not_pinned``: an upstream server whose tools a gateway listed, or that the
  connector inventory names, with no tool pinned (``pin: off``, or never listed by a
  pinning gateway);
- ``tool_unreviewed``: a tool whose definition changed, appeared or was renamed since
  its review and that no human has reviewed (``proctor tool review``);
- ``plaintext_secret``: a connector whose secret discovery saw in plaintext in a client
  config (``proctor discover``);
- ``secret_not_held``: a secret a connector uses that proctor does not hold sealed
  (so it lives somewhere proctor cannot see);
- ``not_measured``: what proctor cannot see at all — a secret an upstream reads from its
  own environment rather than from proctor: said, never silently passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from proctor.identity import AgentRegistry
from proctor.identity.agent import TrustState
from proctor.policy import PolicyEngine, PolicyStore
from proctor.store import Store, as_utc
from proctor.store.tables import approvals, connectors, leases, secrets, tool_catalog

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
    with store.reading() as conn:
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
    gaps.extend(_pinning_gaps(store))
    gaps.extend(_secret_gaps(store))
    gaps.append(Gap("not_measured", "secrets outside proctor",
                    "a secret an upstream reads from its own environment, not from proctor "
                    "(`${secret:NAME}`), is not visible to it"))
    return gaps


def _pinning_gaps(store: Store) -> list[Gap]:
    """Servers with no pinned tool; tools whose change nobody reviewed."""
    with store.reading() as conn:
        tools = conn.execute(select(tool_catalog.c.tool_id, tool_catalog.c.server,
                                    tool_catalog.c.pin_state, tool_catalog.c.pin_change)
                             .order_by(tool_catalog.c.tool_id)).all()
        named = conn.execute(select(connectors.c.id, connectors.c.servers)
                             .where(connectors.c.retired_at.is_(None))).all()
    pinned = {t.server for t in tools if t.pin_state is not None}
    listed = {t.server for t in tools}
    by_connector = {str(server): row.id for row in named for server in row.servers or ()}
    gaps = []
    for server in sorted((listed | set(by_connector)) - pinned):
        where = (f"connector `{by_connector[server]}` names it" if server not in listed
                 else "a gateway listed its tools")
        gaps.append(Gap("server_not_pinned", server,
                        f"{where}, and none of its tools has a reviewed definition "
                        "(pin: off, or not behind a pinning gateway)"))
    for tool in tools:
        if tool.pin_state == "unreviewed":
            gaps.append(Gap("tool_unreviewed", tool.tool_id,
                            f"its definition is {tool.pin_change or 'changed'} since it was "
                            "reviewed, and no human has reviewed it (proctor tool review)"))
    return gaps


def _secret_gaps(store: Store) -> list[Gap]:
    """Connectors whose secret was seen in plaintext; secrets they use that proctor
    does not hold sealed."""
    with store.reading() as conn:
        rows = conn.execute(select(connectors.c.id, connectors.c.secrets,
                                   connectors.c.plaintext_seen_at)
                            .where(connectors.c.retired_at.is_(None))
                            .order_by(connectors.c.id)).all()
        held = set(conn.execute(select(secrets.c.name)).scalars())
    gaps = []
    for row in rows:
        if row.plaintext_seen_at is not None:
            gaps.append(Gap("plaintext_secret", row.id,
                            "proctor discover saw its secret in plaintext in a client "
                            "config: move it with discover --wrap"))
        for name in sorted(str(n) for n in row.secrets or ()):
            if name not in held:
                gaps.append(Gap("secret_not_held", row.id,
                                f"it uses secret `{name}`, which proctor does not hold "
                                "sealed (proctor secret set)"))
    return gaps

