"""The writers' fold scores a baseline with :func:`score_and_names`, which builds no
:class:`Factor`: on baselines folded from generated event streams, under several
settings and at many moments, it gives the very score and named factors that
:func:`score_of` and :func:`named` give (the registry's ``risk_score`` and
``risk_factors`` are compared with what a writer publishes, to the character)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proctor.oversight.risk import RiskConfig
from proctor.oversight.risk.baseline import (
    fold_event,
    named,
    new_baseline,
    score_and_names,
    score_of,
)
from proctor.oversight.risk.config import DEFAULT_WEIGHTS

AGENT = "spiffe://acme.example/agent/coder"
TOOLS = ("kb/search", "crm/lookup", "crm/refund", "hr/salaries", "web/fetch", "git/push")
SENSITIVITY = {"crm/lookup": 2, "hr/salaries": 3, "crm/refund": 1, "web/fetch": 1}
CONFIGS = [
    RiskConfig(),
    RiskConfig(prior=0, warmup_calls=5, min_samples=3, odd_hour_share=0.2),
    RiskConfig(weights={**DEFAULT_WEIGHTS, "new_tool": 0, "deny_ratio": 0, "odd_hour": 45},
               half_life_seconds={"new_tool": 60, "call_rate": 1, "leaked_grant": 0},
               prior=100, warmup_calls=0, ratio_half_life_seconds=0),
]


def _event(rng: random.Random, at: datetime) -> dict[str, Any]:
    time = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if rng.random() < 0.05:
        action = rng.choice(("gateway.leak", "gateway.redact"))
        return {"action": action, "time": time,
                "detail": {"agent": AGENT, "findings": rng.randint(1, 3), "found_in": "x"}}
    tool = rng.choice(TOOLS)
    outcome = rng.choices(("allow", "deny", "approval_required"), (70, 20, 10))[0]
    args: dict[str, Any] = {}
    if rng.random() < 0.4:
        args["numbers"] = {"amount": rng.choice((10, 12, 15, 900, rng.randint(1, 10_000)))}
    if rng.random() < 0.3:
        args["domains"] = [rng.choice(("a.example", "b.example", "evil.example"))]
    return {"action": f"tool:{tool}", "time": time, "task": f"task-{rng.randint(0, 6)}",
            "actor": {"type": "agent", "id": AGENT},
            "decision": {"outcome": outcome}, "detail": {"args": args} if args else {}}


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "quick", "odd"])
@pytest.mark.parametrize("seed", range(4))
def test_the_writers_score_is_score_of_and_its_named_factors(config: RiskConfig,
                                                             seed: int) -> None:
    rng = random.Random(seed)
    baseline = new_baseline()
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    compared = set()
    for _ in range(600):
        at += timedelta(seconds=rng.choice((0.5, 1, 2, 30, 600, 3 * 3600)))
        fold_event(baseline, _event(rng, at), AGENT, config,
                   lambda tool: SENSITIVITY.get(tool, 0))
        for later in (0, rng.uniform(0, 7200), rng.uniform(0, 3 * 86400)):
            now = at.timestamp() + later
            score, _, factors = score_of(baseline, now, config)
            assert score_and_names(baseline, now, config) == (score, named(factors))
            compared.add((score, tuple(named(factors))))
    assert len(compared) > 10  # many scores and sets of names were compared, not one
