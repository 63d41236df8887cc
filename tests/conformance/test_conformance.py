"""The MCP conformance suite against the conformance upstream, compared with the baseline.

The second half of the issue (the same suite through the proctor HTTP gateway in
front of this upstream, passing at least what the upstream passes) is added by
the gateway's tests; see docs/gateway-conformance.md.
"""

from __future__ import annotations

import socket

import pytest

from tests.conformance.runner import load_baseline, run_conformance, run_scenarios, suite_version

pytestmark = pytest.mark.slow


def test_upstream_passes_exactly_the_recorded_baseline(
    conformance_suite: None, conformance_upstream: str
) -> None:
    baseline = load_baseline()
    assert baseline["suite_version"] == suite_version(), "new suite version: re-record the baseline"

    outcomes = run_scenarios(conformance_upstream)

    recorded = set(baseline["passing"]) | set(baseline["not_passing"])
    assert set(outcomes) == recorded, "the suite's scenarios changed: re-record the baseline"
    passing = {name for name, outcome in outcomes.items() if outcome.passed}
    why = {name: outcomes[name].problems for name in set(baseline["passing"]) - passing}
    assert passing == set(baseline["passing"]), f"differs from the baseline; newly failing: {why}"


def test_a_server_that_is_not_there_passes_no_scenario(conformance_suite: None) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"

        results = run_conformance(url)

    assert set(results) == set(load_baseline()["passing"]) | set(load_baseline()["not_passing"])
    assert not any(results.values())
