"""Presenting the manifest an enforcement point is configured with, for its agent.

``proctor mcp wrap --manifest`` presents its file's manifest when its session opens;
the HTTP gateway presents the one its configuration names for the grant's agent
(``manifests:``) when a session of that grant opens. A manifest that differs from the
reviewed one makes the agent drifted at once; the change is audited as the
enforcement point's (the agent reported nothing), and its rules apply from the next
decision on.
"""

from __future__ import annotations

from proctor.audit import Actor, ActorType, AuditEvent, new_event_id
from proctor.identity import Manifest
from proctor.runtime import Runtime

__all__ = ["present_manifest"]


def present_manifest(runtime: Runtime, agent_id: str, manifest: Manifest, *, by: str) -> None:
    """Present ``manifest`` as what ``agent_id`` runs; audit a change as ``by``'s."""
    before = runtime.registry.get(agent_id)
    after = runtime.registry.present_manifest(agent_id, manifest)
    if after.trust_state is before.trust_state and after.presented_digest == \
            before.presented_digest:
        return
    now = runtime.clock.now()
    runtime.audit.record(AuditEvent(
        id=new_event_id(now), time=now, actor=Actor(ActorType.SYSTEM, by),
        action="agent.drift", target=f'Agent::"{agent_id}"', outcome=after.trust_state.value,
        detail={"presented_digest": after.presented_digest or "",
                "fields": sorted(before.manifest.differences(manifest))}))
