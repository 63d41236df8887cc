"""Comparing two policy sets on the same requests; differences are reported, not enforced."""

from __future__ import annotations

from collections.abc import Iterable

from proctor.policy.compiled import CompiledPolicies
from proctor.policy.engine import PolicyEngine, ShadowDifference
from proctor.policy.model import DecisionRequest

__all__ = ["compare_policy_sets"]


def compare_policy_sets(
    engine: PolicyEngine,
    active: CompiledPolicies,
    candidate: CompiledPolicies,
    requests: Iterable[DecisionRequest],
) -> list[ShadowDifference]:
    """Every request whose outcome or determining policies differ between the two sets."""
    differences = []
    for request in requests:
        difference = ShadowDifference.between(
            request, engine.evaluate(active, request), engine.evaluate(candidate, request)
        )
        if difference is not None:
            differences.append(difference)
    return differences
