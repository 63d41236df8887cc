"""The server's public surface is its ``__all__``, and the control-plane Cedar ships valid."""

from __future__ import annotations

import proctor.server as server
from proctor.audit import AuditLog
from proctor.clock import SystemClock
from proctor.server import ControlPlane
from proctor.store import open_store


def test_every_exported_name_exists() -> None:
    assert [n for n in server.__all__ if not hasattr(server, n)] == []
    assert {"create_app", "ServerConfig", "ApiTokens", "ControlPlane"} <= set(server.__all__)


def test_the_control_plane_policies_validate_against_their_schema() -> None:
    store = open_store("sqlite:///:memory:")
    audit = AuditLog(store)
    try:
        control = ControlPlane(audit, SystemClock())
        assert "agents-never-govern" in control.policies.policies
        assert all("reason" in p.annotations for p in control.policies.policies.values())
    finally:
        audit.close()
        store.close()
