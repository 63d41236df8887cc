"""Which tools ``tools/list`` shows an agent: those its grant's scope covers and that
the active policies could allow.

"Could allow" is decided by Cedar on the policies' scopes alone: each permit in
the tool's slice, stripped of its ``when``/``unless`` conditions (which depend on
arguments and context not known at listing time), plus the forbids that have no
conditions. A tool is shown if that set allows the agent on the tool: some
permit names this agent (or a group it is in, or anyone) for the tool (or its
server, or every tool), and no unconditional forbid covers it. The slice already
holds exactly the policies whose action scope covers the tool's action, so the
stripped copies match any action. Listing is only a view: every call is decided
in full.
"""

from __future__ import annotations

import dataclasses
import threading

import cedarpy
from cedarpy import pst

from proctor.grants import GrantClaims
from proctor.policy import PolicyEngine
from proctor.policy.model import EntityRef, quote_id

__all__ = ["Visibility"]

_MAX_CACHED = 10_000


class Visibility:
    """Answers "could this grant's agent be allowed this tool?", cached per policy set."""

    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine
        # each answer with the agent's entities it was computed on
        self._cache: dict[tuple[str, str], tuple[cedarpy.Entities, bool]] = {}
        self._basis: object | None = None  # the policy set the cache was computed on
        self._lock = threading.Lock()

    def shows(self, claims: GrantClaims, tool_id: str) -> bool:
        """The grant's scope covers ``tool_id`` and the policies could allow it."""
        later = claims.wildcards is not None and claims.wildcards.names(tool_id)
        if not claims.scope.names(tool_id) and not later:
            return False
        return self.policy_could_allow(claims.agent_id, tool_id)

    def policy_could_allow(self, agent_id: str, tool_id: str) -> bool:
        engine = self._engine
        policies = engine.active
        if policies is None:
            return False
        # the agent's shard as it is now: a change to the agent (or its shard) is seen
        entities = engine.entities_for(EntityRef("Agent", agent_id))
        key = (agent_id, tool_id)
        with self._lock:
            if self._basis is not policies:
                self._cache.clear()
                self._basis = policies
            found = self._cache.get(key)
        if found is not None and found[0] is entities:
            return found[1]
        action = f"tool:{tool_id}"
        nodes: dict[str, pst.Template] = {}
        for pid in policies.slice_ids(action, f"Tool::{quote_id(tool_id)}"):
            node = policies.policies[pid].node
            if node.effect == "permit":
                nodes[pid] = dataclasses.replace(node, action=pst.ScopeAny(), clauses=())
            elif not node.clauses:
                nodes[pid] = dataclasses.replace(node, action=pst.ScopeAny())
        allowed = False
        if any(n.effect == "permit" for n in nodes.values()):
            handle = cedarpy.PolicySet.from_pst(
                pst.PolicySet(templates={}, static_policies=nodes, template_links=()))
            result = cedarpy.is_authorized(
                {"principal": {"type": "Agent", "id": agent_id},
                 "action": {"type": "Action", "id": action},
                 "resource": {"type": "Tool", "id": tool_id}, "context": {}},
                handle, entities)
            allowed = result.decision is cedarpy.Decision.Allow and not result.diagnostics.errors
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            if self._basis is policies:
                self._cache[key] = (entities, allowed)
        return allowed
