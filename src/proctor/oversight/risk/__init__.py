"""Behaviour baselines and the risk score: per agent, from the audit stream, explained
by its factors, in policy as ``principal.risk_score`` and ``principal.risk_factors``.
See ``docs/risk.md``.
"""

from proctor.oversight.risk.baseline import Factor, new_baseline, score_of
from proctor.oversight.risk.config import (
    DEFAULT_HALF_LIVES,
    DEFAULT_WEIGHTS,
    FACTORS,
    RiskConfig,
    load_risk_config,
    parse_risk_config,
)
from proctor.oversight.risk.engine import RiskEngine, RiskView

__all__ = [
    "DEFAULT_HALF_LIVES",
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "Factor",
    "RiskConfig",
    "RiskEngine",
    "RiskView",
    "load_risk_config",
    "new_baseline",
    "parse_risk_config",
    "score_of",
]
