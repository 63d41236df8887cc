"""One agent's behaviour baseline, folded one audit event at a time, and its factors.

The baseline is a JSON document (stored per agent) holding only bounded state: the
call-rate window and its running mean and variance, the tools and destination
domains seen, an hour-of-day histogram, decayed counts of decisions, denies and
approvals, recent values of each numeric argument, the data sensitivity of recent
tasks, and *signals*: a factor that fired, how strongly, when and why. A signal fades
with its factor's half-life; the ratios are read from the decayed counts.

Every factor is a level from 0 to 1; the score is
``clamp(prior_now + sum(weight * level), 0, 100)`` (see ``docs/risk.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proctor.oversight.risk.config import FACTORS, RiskConfig

__all__ = [
    "COUNTERS",
    "Factor",
    "decided_again",
    "factors_now",
    "fold_event",
    "named",
    "new_baseline",
    "note_trend",
    "prior_now",
    "score_and_names",
    "score_of",
]

Event = Mapping[str, Any]

# an allow refused by its write because another process had changed the agent or the
# task meanwhile: the enforcer decides the call once more (enforcement/steps.py)
_DECIDED_AGAIN = ("agent_changed", "task_changed", "policy_changed")

_MAX_TOOLS = 500
_MAX_DOMAINS = 500
_MAX_VALUES = 200
_MAX_TASKS = 50
_MAX_TREND = 60
_RATE_MIN_CALLS = 5
_RATE_MIN_WINDOWS = 5
_EWMA = 0.2


@dataclass(frozen=True, slots=True)
class Factor:
    """One factor's part of the score now: ``points = weight * level``."""

    name: str
    level: float
    weight: int
    why: str = ""
    at: str | None = None

    @property
    def points(self) -> float:
        return self.weight * self.level

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "level": round(self.level, 3), "weight": self.weight,
                "points": round(self.points, 1), "why": self.why, "at": self.at}


def new_baseline() -> dict[str, Any]:
    """The baseline of an agent nothing is known about yet."""
    return {"calls": 0, "rate": {"start": None, "count": 0, "mean": 0.0, "var": 0.0,
                                 "windows": 0},
            "tools": [], "domains": [], "hours": [0.0] * 24,
            "ratios": {"total": 0.0, "denies": 0.0, "approvals": 0.0, "at": None},
            "numbers": {}, "tasks": {}, "signals": {}, "trend": []}


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _signal(baseline: dict[str, Any], name: str, level: float, at: float, why: str,
            config: RiskConfig) -> bool:
    """Raise ``name`` to ``level`` unless what is left of an earlier signal is stronger;
    whether it did (a signal replaced is one of a stronger level: never an equal one)."""
    if level <= 0:
        return False
    current = baseline["signals"].get(name)
    if current is not None and _faded(current, name, at, config) >= level:
        return False
    baseline["signals"][name] = {"level": min(1.0, level), "at": at, "why": why[:200]}
    return True


def _faded(signal: Mapping[str, Any], name: str, now: float, config: RiskConfig) -> float:
    half_life = config.half_life_seconds.get(name, 3600) or 1
    age = max(0.0, now - float(signal["at"]))
    level: float = float(signal["level"]) * 0.5 ** (age / half_life)
    return level


def _percentile(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _decay_ratios(baseline: dict[str, Any], at: float, config: RiskConfig) -> None:
    ratios = baseline["ratios"]
    last = ratios["at"]
    if last is not None and at > last:
        keep = 0.5 ** ((at - last) / max(1, config.ratio_half_life_seconds))
        ratios["total"] *= keep
        ratios["denies"] *= keep
        ratios["approvals"] *= keep
    ratios["at"] = at if last is None else max(at, last)


def _fold_rate(baseline: dict[str, Any], at: float, config: RiskConfig) -> bool:
    """Count a call in its window; whether it raised the ``call_rate`` signal."""
    rate, width = baseline["rate"], config.rate_window_seconds
    start = math.floor(at / width) * width
    if rate["start"] is None:
        rate["start"] = start
    elif start > rate["start"]:  # close the window; only active windows make the baseline
        count = rate["count"]
        if rate["windows"] == 0:
            rate["mean"] = float(count)
        else:
            delta = count - rate["mean"]
            rate["mean"] += _EWMA * delta
            rate["var"] = (1 - _EWMA) * (rate["var"] + _EWMA * delta * delta)
        rate["windows"] += 1
        rate["start"], rate["count"] = start, 0
    rate["count"] += 1
    if rate["windows"] >= _RATE_MIN_WINDOWS and rate["count"] >= _RATE_MIN_CALLS:
        z = (rate["count"] - rate["mean"]) / math.sqrt(rate["var"] + 1.0)
        level = (z - 3) / 3
        if not level <= 0:  # (the reason's text only for a signal that may be raised)
            return _signal(baseline, "call_rate", level, at, f"{rate['count']} calls in "
                           f"{width} s against a usual {rate['mean']:.1f}", config)
    return False


def decided_again(event: Event) -> bool:
    """Whether ``event`` is an allow its write refused because another process had
    changed the agent or the task meanwhile: not the agent's doing (its call was
    decided once more, and that decision is folded), so neither judged nor counted."""
    detail = event.get("detail")
    return (event.get("outcome") == "denied" and isinstance(detail, Mapping)
            and detail.get("code") in _DECIDED_AGAIN)


# The parts of a baseline most events change (written whole every time); the others
# (tools, domains, tasks, signals, the trend) change seldom: see fold_event's answer.
COUNTERS = frozenset({"calls", "rate", "hours", "ratios", "numbers", "max_sensitivity"})


def fold_event(baseline: dict[str, Any], event: Event, agent_id: str, config: RiskConfig,
               sensitivity_of: Callable[[str], int], *, at: float | None = None) -> bool:
    """Fold one audit event about ``agent_id`` into its baseline (in place); ``at`` its
    time as a POSIX timestamp when the caller has it (else read from ``event["time"]``).

    Whether it changed a part of the baseline other than the :data:`COUNTERS` (it
    changed none of them in place if not: a writer may keep their text)."""
    # (``type(x) is dict`` first: the same answer as ``isinstance(x, Mapping)`` for a
    # dict, without the ABC's check; once per decision)
    action = event.get("action", "")
    if type(action) is not str:
        action = str(action)
    if at is None:
        at = _epoch(str(event["time"]))
    detail = event.get("detail")
    if type(detail) is not dict and not isinstance(detail, Mapping):
        detail = {}
    if action == "gateway.leak":
        return _signal(baseline, "leaked_grant", 1.0, at,
                       f"a live grant in {str(detail.get('found_in', 'a call'))[:120]}", config)
    if action == "gateway.redact":
        findings = int(detail.get("findings") or 1)
        return _signal(baseline, "leaked_secret", min(1.0, 0.5 + 0.25 * findings), at,
                       f"{findings} secret(s) redacted from what the agent was sent", config)
    if not action.startswith("tool:"):
        return False
    tool = action[len("tool:"):]
    decision = event.get("decision")
    if type(decision) is not dict and not isinstance(decision, Mapping):
        decision = None
    outcome = (decision or {}).get("outcome") if decision else (
        "deny" if event.get("outcome") == "denied" else None)
    # Only what the agent was allowed to do teaches its baseline (its tools, domains,
    # hours, amounts, the sensitivity its tasks reach, its warm-up): a refused or held
    # call is still judged, and counts towards the rate and the ratios, but an agent
    # cannot make tomorrow's call look usual by being refused it today.
    learns = outcome == "allow"
    if event.get("outcome") == "denied" and detail.get("code") in _DECIDED_AGAIN:
        return False  # decided_again(event)
    warm = baseline["calls"] >= config.warmup_calls
    if learns:
        baseline["calls"] += 1
    changed = _fold_rate(baseline, at, config)
    if tool not in baseline["tools"]:
        if warm:
            changed |= _signal(baseline, "new_tool", 1.0, at, f"first use of `{tool}`", config)
        if learns and len(baseline["tools"]) < _MAX_TOOLS:
            baseline["tools"].append(tool)
            changed = True
    hour = datetime.fromtimestamp(at, UTC).hour
    hours = baseline["hours"]
    total = sum(hours)
    if warm and total > 0 and hours[hour] / total < config.odd_hour_share:
        changed |= _signal(baseline, "odd_hour", 1.0, at,
                           f"active at {hour:02d}h UTC, which it rarely is", config)
    if learns:
        hours[hour] += 1
    _decay_ratios(baseline, at, config)
    ratios = baseline["ratios"]
    ratios["total"] += 1
    if outcome == "deny":
        ratios["denies"] += 1
    elif outcome == "approval_required":
        ratios["approvals"] += 1
    features = detail.get("args")
    if type(features) is not dict and not isinstance(features, Mapping):
        features = {}
    for domain in features.get("domains") or ():
        if domain not in baseline["domains"]:
            if warm:
                changed |= _signal(baseline, "new_destination", 1.0, at,
                                   f"first call to `{domain}`", config)
            if learns and len(baseline["domains"]) < _MAX_DOMAINS:
                baseline["domains"].append(domain)
                changed = True
    numbers = features.get("numbers")
    if type(numbers) is not dict and not isinstance(numbers, Mapping):
        numbers = {}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        seen = baseline["numbers"].get(f"{tool}|{name}", [])
        if len(seen) >= config.min_samples:
            high = _percentile(seen, config.percentile)
            if value > high:
                level = 0.5 + 0.5 * (value - high) / max(abs(high), 1)
                changed |= _signal(baseline, "numeric_outlier", level, at,
                                   f"`{name}` of `{tool}` is {value}, above its usual "
                                   f"p{config.percentile} of {high}", config)
        if learns:
            seen.append(value)
            del seen[:-_MAX_VALUES]
            baseline["numbers"][f"{tool}|{name}"] = seen
    task = str(event.get("task") or "")
    level = sensitivity_of(tool)
    if task:
        tasks = baseline["tasks"]
        seen_task = tasks.get(task, {"first": level, "max": level})
        usual = int(baseline.get("max_sensitivity", 0))
        # a climb within the task to data the agent's tasks never reached before
        if level > seen_task["max"] and warm and level > usual:
            changed |= _signal(baseline, "sensitivity_escalation",
                               (level - seen_task["first"]) / 3, at,
                               f"task `{task}` went from sensitivity {seen_task['first']} to "
                               f"{level}, above its usual {usual}", config)
        if learns:
            # a new task, or a higher mark (``max`` keeps the mark it has otherwise)
            changed |= task not in tasks or level > seen_task["max"]
            seen_task["max"] = max(seen_task["max"], level)
            tasks[task] = seen_task
            baseline["max_sensitivity"] = max(usual, level)
            if len(tasks) > _MAX_TASKS:
                for old in list(tasks)[:-_MAX_TASKS]:
                    del tasks[old]
                    changed = True
    return changed


_RATIOS = {"deny_ratio": ("denies", 0.1, 0.4), "approval_ratio": ("approvals", 0.25, 0.5)}
_NAMED = 0.25  # a factor at this level or more is named in `principal.risk_factors`
_RATIO_FACTORS = tuple(name for name in FACTORS if name in _RATIOS)  # in FACTORS' order


def _kept(ratios: Mapping[str, Any], now: float, config: RiskConfig) -> float:
    """What is left at ``now`` of the decayed counts, as of when they were last folded."""
    if ratios["at"] is not None and now > ratios["at"]:
        keep: float = 0.5 ** ((now - ratios["at"]) / max(1, config.ratio_half_life_seconds))
        return keep
    return 1.0


def _levels(baseline: Mapping[str, Any], now: float, config: RiskConfig
            ) -> list[tuple[str, float, int, Any]]:
    """Every factor's level at ``now``, in the order of :data:`FACTORS`: its name,
    level and weight, and what it comes from (the ratio's share, the signal)."""
    found: list[tuple[str, float, int, Any]] = []
    ratios = baseline["ratios"]
    keep = _kept(ratios, now, config)
    total = ratios["total"] * keep
    weights, signals = config.weights, baseline["signals"]
    for name in FACTORS:
        weight = int(weights.get(name, 0))
        ratio = _RATIOS.get(name)
        if ratio is not None:
            key, low, span = ratio
            if total < 3:
                found.append((name, 0.0, weight, None))
                continue
            share = ratios[key] * keep / total
            found.append((name, min(1.0, max(0.0, (share - low) / span)), weight, share))
            continue
        signal = signals.get(name)
        if signal is None:
            found.append((name, 0.0, weight, None))
            continue
        level = _faded(signal, name, now, config)
        found.append((name, level if level >= 0.01 else 0.0, weight, signal))
    return found


def factors_now(baseline: Mapping[str, Any], now: float, config: RiskConfig) -> list[Factor]:
    """Every factor's level at ``now``, in the order of :data:`FACTORS`."""
    found: list[Factor] = []
    for name, level, weight, source in _levels(baseline, now, config):
        if source is None:
            found.append(Factor(name, level, weight))
        elif name in _RATIOS:
            found.append(Factor(name, level, weight,
                                f"{source:.0%} of recent decisions" if level else ""))
        else:
            at = datetime.fromtimestamp(float(source["at"]), UTC).isoformat()
            found.append(Factor(name, level, weight, str(source["why"]), at))
    return found


def named(factors: Sequence[Factor]) -> list[str]:
    """The factors a policy sees in ``principal.risk_factors``, strongest first."""
    return [f.name for f in sorted(factors, key=lambda f: -f.points)
            if f.level >= _NAMED and f.weight > 0]


def prior_now(baseline: Mapping[str, Any], config: RiskConfig) -> float:
    """The prior's part: ``prior * (1 - calls / warmup_calls)``, never below 0."""
    if config.warmup_calls <= 0:
        return 0.0
    part: float = config.prior * max(0.0, 1 - int(baseline["calls"]) / config.warmup_calls)
    return part


def score_of(baseline: Mapping[str, Any], now: float, config: RiskConfig
             ) -> tuple[int, float, list[Factor]]:
    """The score at ``now``, the prior's part and the factors it is made of."""
    factors = factors_now(baseline, now, config)
    prior = prior_now(baseline, config)
    total = prior + sum(f.points for f in factors)
    return max(0, min(100, math.floor(total + 0.5))), prior, factors  # half rounds up


def score_and_names(baseline: Mapping[str, Any], now: float, config: RiskConfig
                    ) -> tuple[int, list[str]]:
    """What :func:`score_of` and :func:`named` give, without the factors' explanations
    (the writers' fold publishes only these: no :class:`Factor`, no reason text).

    Once per decision, so only the factors above zero are looked at: a factor at level
    zero adds nothing to the sum (``x + 0.0`` is ``x``) and is never named. The levels
    are :func:`_levels`' to the bit (its expressions, in the order of :data:`FACTORS`),
    and the points are summed in that order, as :func:`score_of` sums them."""
    ratios = baseline["ratios"]
    keep = _kept(ratios, now, config)
    total = ratios["total"] * keep
    weights, signals = config.weights, baseline["signals"]
    points: list[float] = []
    named_at: list[tuple[float, str]] = []
    # no signal: only the ratios can be above zero (the others are skipped below)
    for name in _RATIO_FACTORS if type(signals) is dict and not signals else FACTORS:
        ratio = _RATIOS.get(name)
        if ratio is not None:
            if total < 3:
                continue
            key, low, span = ratio
            count = ratios[key]
            if count == 0:  # a share of 0 is below `low`: level 0.0 (also over a NaN total)
                continue
            level = min(1.0, max(0.0, (count * keep / total - low) / span))
        else:
            signal = signals.get(name)
            if signal is None:
                continue
            level = _faded(signal, name, now, config)
            if not level >= 0.01:
                continue
        if level == 0.0:
            continue
        weight = int(weights.get(name, 0))
        points.append(weight * level)
        if level >= _NAMED and weight > 0:
            named_at.append((weight * level, name))
    total_points = prior_now(baseline, config) + sum(points)
    names = [name for _, name in sorted(named_at, key=lambda pair: -pair[0])]
    return max(0, min(100, math.floor(total_points + 0.5))), names


def note_trend(baseline: dict[str, Any], now: float, score: int) -> bool:
    """Keep the score's history: a point when it changes (the last few dozen); whether
    it added one."""
    trend = baseline["trend"]
    if not trend or trend[-1][1] != score:
        trend.append([now, score])
        del trend[:-_MAX_TREND]
        return True
    return False
