"""The plain decorator's example, end to end against a live server."""

from __future__ import annotations

from examples.frameworks.plain_decorator import run

from .conftest import Live


def test_the_decorator_example_allows_denies_waits_for_a_human_and_stops_on_revocation(
        live: Live) -> None:
    assert run(live.base, live.admin_token) == {
        "allowed": "allow", "denied": "grant_out_of_scope", "approved": "allow",
        "revoked": "grant_revoked", "approvals": "1"}
