"""Presenting the manifest an enforcement point is configured with, for its agent.

``proctor mcp wrap --manifest`` presents its file's manifest when its session opens;
the HTTP gateway presents the one its configuration names for the grant's agent
(``manifests:``) when a session of that grant opens. A manifest that differs from the
reviewed one makes the agent drifted at once; the change is audited as the
enforcement point's (the agent reported nothing), and its rules apply from the next
decision on.
"""

from __future__ import annotations

from proctor.audit import Actor, ActorType
from proctor.identity import Manifest
from proctor.oversight.drifting import present_manifest as present_with_event
from proctor.runtime import Runtime

__all__ = ["present_manifest"]


def present_manifest(runtime: Runtime, agent_id: str, manifest: Manifest, *, by: str) -> None:
    """Present ``manifest`` as what ``agent_id`` runs; a change is made with its
    ``agent.drift`` event as ``by``'s, in one transaction (:mod:`proctor.oversight.drifting`)."""
    present_with_event(runtime.registry, runtime.audit, runtime.clock, agent_id, manifest,
                       actor=Actor(ActorType.SYSTEM, by))
