"""Why a request gets its decision: the determining policies with their source,
the policies evaluated without effect, and those whose scope excludes the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proctor.policy.engine import PolicyEngine
from proctor.policy.model import Decision, DecisionRequest
from proctor.policy.source import LocatedPolicy

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    determining: tuple[LocatedPolicy, ...]
    not_satisfied: tuple[LocatedPolicy, ...]
    out_of_scope: tuple[LocatedPolicy, ...]

    def as_json(self) -> dict[str, Any]:
        def brief(p: LocatedPolicy, with_text: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {"id": p.id, "effect": p.effect, "file": p.file,
                                   "line": p.line}
            if with_text:
                out["source"] = p.text
            return out

        return {
            **self.decision.as_json(),
            "determining": [brief(p, True) for p in self.determining],
            "not_satisfied": [brief(p) for p in self.not_satisfied],
            "out_of_scope": [brief(p) for p in self.out_of_scope],
        }


def explain(engine: PolicyEngine, request: DecisionRequest) -> Explanation:
    """Decide ``request`` with the active set and sort its policies by their part."""
    decision = engine.decide(request)
    active = engine.active
    if active is None:
        return Explanation(decision, (), (), ())
    in_slice = set(active.slice_ids(request.action, str(request.resource)))
    determining = tuple(active.policies[p] for p in decision.policy_ids if p in active.policies)
    chosen = set(decision.policy_ids)
    others = [p for p in active.policies.values() if p.id not in chosen]
    return Explanation(
        decision,
        determining,
        tuple(p for p in others if p.id in in_slice),
        tuple(p for p in others if p.id not in in_slice),
    )
