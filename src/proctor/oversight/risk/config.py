"""Risk scoring settings: the weight of each factor, how fast each fades, the windows
and the prior. Read from ``$PROCTOR_HOME/risk.toml`` when it exists; every key is
optional and unknown keys are refused::

    prior = 10                    # points of a new agent, fading over warmup_calls
    warmup_calls = 20             # calls before new tools, domains, hours count
    rate_window_seconds = 60      # the call-rate window
    ratio_half_life_seconds = 3600
    percentile = 95               # a numeric argument above this percentile is odd
    min_samples = 10              # values of an argument before its percentile counts
    odd_hour_share = 0.02         # an hour holding less than this share of calls is odd

    [weights]                     # points at full strength
    leaked_grant = 30

    [half_life_seconds]           # how fast a signal fades
    leaked_grant = 86400
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proctor.documents import read_toml
from proctor.errors import ConfigError

__all__ = [
    "DEFAULT_HALF_LIVES",
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "RiskConfig",
    "load_risk_config",
    "parse_risk_config",
]

FACTORS = ("call_rate", "new_tool", "deny_ratio", "approval_ratio", "sensitivity_escalation",
           "new_destination", "numeric_outlier", "odd_hour", "leaked_secret", "leaked_grant")

DEFAULT_WEIGHTS: Mapping[str, int] = {
    "call_rate": 20, "new_tool": 10, "deny_ratio": 20, "approval_ratio": 10,
    "sensitivity_escalation": 15, "new_destination": 15, "numeric_outlier": 20,
    "odd_hour": 10, "leaked_secret": 5, "leaked_grant": 30,
}
DEFAULT_HALF_LIVES: Mapping[str, int] = {
    "call_rate": 900, "new_tool": 3600, "sensitivity_escalation": 3600,
    "new_destination": 3600, "numeric_outlier": 3600, "odd_hour": 3600,
    "leaked_secret": 86400, "leaked_grant": 86400,
}
_CONFIG_FILE = "risk.toml"
_SCALARS = {"prior", "warmup_calls", "rate_window_seconds", "ratio_half_life_seconds",
            "percentile", "min_samples", "odd_hour_share"}


@dataclass(frozen=True, slots=True)
class RiskConfig:
    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    half_life_seconds: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_HALF_LIVES))
    prior: int = 10
    warmup_calls: int = 20
    rate_window_seconds: int = 60
    ratio_half_life_seconds: int = 3600
    percentile: int = 95
    min_samples: int = 10
    odd_hour_share: float = 0.02

    def as_json(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "half_life_seconds": dict(self.half_life_seconds),
                "prior": self.prior, "warmup_calls": self.warmup_calls,
                "rate_window_seconds": self.rate_window_seconds,
                "ratio_half_life_seconds": self.ratio_half_life_seconds,
                "percentile": self.percentile, "min_samples": self.min_samples,
                "odd_hour_share": self.odd_hour_share}


def _table(data: Any, name: str, defaults: Mapping[str, int]) -> dict[str, int]:
    if data is None:
        return dict(defaults)
    if not isinstance(data, dict):
        raise ConfigError(f"risk config `[{name}]` is not a table")
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        raise ConfigError(f"risk config `[{name}]` names unknown factor `{unknown[0]}`")
    values = dict(defaults)
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"risk config `{name}.{key}` must be a whole number >= 0")
        values[key] = value
    return values


def parse_risk_config(data: Mapping[str, Any]) -> RiskConfig:
    """A :class:`RiskConfig` from the parsed file (see the module docstring)."""
    unknown = sorted(set(data) - _SCALARS - {"weights", "half_life_seconds"})
    if unknown:
        raise ConfigError(f"risk config has unknown key `{unknown[0]}`")
    config = RiskConfig(_table(data.get("weights"), "weights", DEFAULT_WEIGHTS),
                        _table(data.get("half_life_seconds"), "half_life_seconds",
                               DEFAULT_HALF_LIVES))
    changes: dict[str, Any] = {}
    for key in _SCALARS & set(data):
        value = data[key]
        if key == "odd_hour_share":
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value < 1:
                raise ConfigError("risk config `odd_hour_share` must be a number from 0 to 1")
            changes[key] = float(value)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"risk config `{key}` must be a whole number >= 0")
        else:
            changes[key] = value
    if changes.get("percentile", 95) > 100 or changes.get("rate_window_seconds", 60) == 0:
        raise ConfigError("risk config `percentile` is at most 100 and `rate_window_seconds` "
                          "at least 1")
    return replace(config, **changes)


def load_risk_config(home: Path) -> RiskConfig:
    """``$PROCTOR_HOME/risk.toml``, or the defaults when there is none."""
    path = home / _CONFIG_FILE
    if not path.is_file():
        return RiskConfig()
    return parse_risk_config(read_toml(path, what="risk config", error=ConfigError))
