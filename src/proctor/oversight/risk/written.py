"""What the writers' fold reads and writes once per decision, without JSON where it can.

An event's parts that a fold reads (:func:`as_folded`) come from the
:class:`~proctor.audit.AuditEvent` the audit writer wrote, not from parsing its body
again: the same values ``json.loads`` of the body gives, or None when the event holds a
value whose JSON reads back as another (then the body is parsed).

A baseline's text (:class:`BaselineText`), written on every decision, in three parts:
the counters most events change (:data:`~proctor.oversight.risk.baseline.COUNTERS`,
written every time), the parts seldom changed (tools, domains, tasks, signals: their
text kept until a fold says it changed them), and the history of scores (``trend``, up
to 60 points of a float time and a score, the costliest to write: kept until a point is
added). The same document to ``json.loads`` as ``json.dumps(baseline)``, its keys in
another order (the counters, the rest, ``trend`` last). The counters of the shape the
fold gives them (``BaselineText._counters_text``: ints, finite floats, the rate's and the
ratios' keys in their order) are written in one piece, without the encoder, to the
character as ``dumps`` writes each (what moves a decision is the floats' ``repr``, not the
encoder); any other shape (a NaN or an infinity a stored baseline may hold, a bool, a
subclass) is written by ``dumps``.
"""

from __future__ import annotations

import json
from itertools import compress
from math import copysign, isfinite
from operator import is_not
from typing import Any

from proctor.audit import AuditEvent
from proctor.oversight.risk.baseline import COUNTERS

__all__ = ["BaselineText", "as_folded", "dumps"]

# `json.dumps` with its defaults, to the character (the published factors are compared
# with what the registry wrote), without building the encoder's C core on every call.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # absent without _json
_encode = None if _make_encoder is None else _make_encoder(
    None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def dumps(value: Any) -> str:
    """``json.dumps(value)``."""
    if _encode is None:
        return json.dumps(value)
    return "".join(_encode(value, 0))


_KEYS = {key: f"{dumps(key)}: " for key in (*COUNTERS, "tools", "domains", "tasks",
                                             "signals", "trend")}


class BaselineText:
    """The text of one baseline object (another, even an equal one, gets a text of its
    own), its seldom changed parts kept (see the module docstring) until the folder says
    a fold changed them (:meth:`changed`, :meth:`trend_changed`)."""

    __slots__ = ("_hours", "_rate", "_rest", "_trend", "baseline")

    def __init__(self, baseline: dict[str, Any]) -> None:
        self.baseline = baseline  # held: its id is no other's while this lives
        self._rest: str | None = None
        self._trend: str | None = None
        # the hours' list, its floats as last written and their texts (a fold replaces
        # one float: the others keep their objects, held here, so their texts)
        self._hours: tuple[list[Any], list[Any], list[str]] | None = None
        # the rate's mean and variance as last written and their texts (a fold replaces
        # them only when a window closes: the same objects, the same texts)
        self._rate: tuple[float, float, str] | None = None

    def changed(self) -> None:
        """A part other than the counters and the history may have changed."""
        self._rest = None

    def trend_changed(self) -> None:
        """A point was added to the history."""
        self._trend = None

    def text(self) -> str:
        baseline, keys = self.baseline, _KEYS
        rest = self._rest
        if rest is None:
            parts = []
            for key, value in baseline.items():
                if key in COUNTERS or key == "trend":
                    continue
                if type(key) is not str:  # not this writer's: json.dumps's own way
                    return dumps(baseline)
                parts.append((keys.get(key) or f"{dumps(key)}: ") + dumps(value))
            rest = self._rest = ", ".join(parts)
        counters = self._counters_text(baseline)
        written = [counters] if counters is not None else [
            keys[key] + (self._hours_text(value) if key == "hours" else dumps(value))
            for key, value in baseline.items() if key in COUNTERS]
        if rest:
            written.append(rest)
        if "trend" in baseline:
            trend = self._trend
            if trend is None:
                trend = self._trend = dumps(baseline["trend"])
            written.append(keys["trend"] + trend)
        return "{" + ", ".join(written) + "}"


    def _counters_text(self, baseline: dict[str, Any]) -> str | None:
        """The counters' text in one piece for the shape :func:`new_baseline` and
        :func:`fold_event` give them (ints of type int, finite floats of type float, the
        rate's and the ratios' keys in the order they are made in); None for any other
        (then written by ``dumps``)."""
        calls, rate, ratios = baseline.get("calls"), baseline.get("rate"), baseline.get("ratios")
        hours, numbers = baseline.get("hours"), baseline.get("numbers")
        mark = baseline.get("max_sensitivity")
        if (type(rate) is not dict or tuple(rate) != _RATE_KEYS or type(ratios) is not dict
                or tuple(ratios) != _RATIO_KEYS or type(numbers) is not dict
                or hours is None or "numbers" not in baseline or "hours" not in baseline):
            return None
        start, count, mean, var, windows = rate.values()
        total, denies, approvals, at = ratios.values()
        if not (type(calls) is int and type(count) is int and type(windows) is int
                and (start is None or type(start) is int) and type(mean) is float
                and type(var) is float and type(total) is float and type(denies) is float
                and type(approvals) is float and (at is None or type(at) is float)
                and (mark is None or type(mark) is int)
                and isfinite(mean + var + total + denies + approvals + (at or 0.0))):
            return None
        kept = self._rate
        if kept is None or kept[0] is not mean or kept[1] is not var:
            kept = self._rate = (mean, var, f'"mean": {mean!r}, "var": {var!r}')
        # a count at 0.0 (the deny and approval counts of most agents) without
        # float.__repr__ (-0.0, which a stored baseline may hold, goes through it)
        denied = "0.0" if denies == 0.0 and copysign(1.0, denies) > 0.0 else repr(denies)
        held = "0.0" if approvals == 0.0 and copysign(1.0, approvals) > 0.0 \
            else repr(approvals)
        text = (f'"calls": {calls}, "rate": {{"start": {"null" if start is None else start}, '
                f'"count": {count}, {kept[2]}, "windows": {windows}}}, '
                f'"hours": {self._hours_text(hours)}, "ratios": {{"total": {total!r}, '
                f'"denies": {denied}, "approvals": {held}, '
                f'"at": {"null" if at is None else repr(at)}}}, '
                f'"numbers": {dumps(numbers) if numbers else "{}"}')
        if mark is None:
            return text if "max_sensitivity" not in baseline else None
        return f'{text}, "max_sensitivity": {mark}'

    def _hours_text(self, hours: Any) -> str:
        """``dumps(hours)``, the text of each float kept while it is the same object."""
        kept = self._hours
        if type(hours) is not list:
            return dumps(hours)
        if kept is None or kept[0] is not hours or len(kept[1]) != len(hours):
            if any(type(hour) is not float for hour in hours):
                return dumps(hours)
            kept = self._hours = (hours, list(hours), [dumps(hour) for hour in hours])
        _, objects, texts = kept
        for at in compress(range(len(objects)), map(is_not, hours, objects)):
            hour = hours[at]
            if type(hour) is not float:
                self._hours = None
                return dumps(hours)
            objects[at], texts[at] = hour, dumps(hour)
        return "[" + ", ".join(texts) + "]"


_RATE_KEYS = ("start", "count", "mean", "var", "windows")
_RATIO_KEYS = ("total", "denies", "approvals", "at")


def as_folded(event: AuditEvent) -> dict[str, Any] | None:
    """What :func:`~proctor.oversight.risk.baseline.fold_event` and
    :func:`~proctor.oversight.risk.folding.agent_of` read of a tool call's event, as
    ``json.loads`` of its body gives it; None (parse the body) for any other event, or
    one holding a value of another type than its JSON reads back as (a subclass of
    ``str`` or ``int``, a tuple) or numbers in another order than the body's (sorted)."""
    action, task, outcome, actor = event.action, event.task, event.outcome, event.actor
    if (type(action) is not str or not action.startswith("tool:") or type(task) is not str
            or type(outcome) is not str or type(actor.id) is not str):
        return None
    record = event.decision
    decision = None
    if record is not None:
        if type(record.outcome) is not str:
            return None
        decision = {"outcome": record.outcome}
    detail = event.detail
    folded: dict[str, Any] = {}
    if detail:
        code = detail.get("code")  # a refused write's: decided_again reads it
        if code is not None:
            if type(code) is not str:
                return None
            folded["code"] = code
        args = detail.get("args")
        if args is not None:
            features = _features(args)
            if features is None:
                return None
            folded["args"] = features
    return {"action": action, "actor": {"type": actor.type.value, "id": actor.id},
            "task": task, "outcome": outcome, "decision": decision, "detail": folded}


def _features(args: Any) -> dict[str, Any] | None:
    """An event's ``args`` (its domains and numbers) as its body reads back, or None."""
    if type(args) is not dict:
        return None
    features: dict[str, Any] = {}
    domains = args.get("domains")
    if domains is not None:
        if type(domains) is not list or any(type(d) is not str for d in domains):
            return None
        features["domains"] = domains
    numbers = args.get("numbers")
    if numbers is not None:
        if type(numbers) is not dict or any(type(name) is not str or type(value) is not int
                                            for name, value in numbers.items()):
            return None
        features["numbers"] = dict(sorted(numbers.items()))  # the body's order
    return features
