"""Decisions kept for the same request again: what a policy reads of the context, and
the memo that serves a decision only where Cedar's answer cannot differ.

Cedar is deterministic: given the same policies, the same entities and the same
request, it answers the same. A policy reads the context only through ``context.a``
or ``context has a`` (:func:`context_reads` finds which top-level attributes), so two
requests whose contexts agree on every attribute the slice's policies read are
decided alike, whatever else their contexts hold (the time of an issuance, say, when
no ``grant:issue`` policy reads ``context.time``). A policy that uses ``context`` in any
other way (``context == {…}``) reads all of it.

:class:`DecisionMemo` keys a decision by the entities handle and the policy set it was
taken against (the objects themselves: a new revision, a changed agent, a learnt tool
each make a new one, so an entry can never answer for them), the principal, action and
resource, and the values of the attributes read, plus ``approved`` (which the engine
reads itself, for ``@approval``). It keeps only decisions of requests proven
well-typed (taken without the schema: :mod:`proctor.policy.conformance`) and without
errors. The differential test (``tests/policy/test_decision_memo.py``) holds it to the
engine's own answers.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from cedarpy import pst

from proctor.policy.model import Decision, DecisionRequest

__all__ = ["DecisionMemo", "context_reads", "memo_reads"]

_MAX_ENTRIES = 1024  # per entities handle
_ALWAYS_READ = ("approved",)  # the engine's own reading (`@approval`), whatever policies read


def context_reads(nodes: Iterable[pst.Template]) -> frozenset[str] | None:
    """The top-level context attributes ``nodes`` read (None: the whole context)."""
    found: set[str] = set()
    stack: list[Any] = list(nodes)
    while stack:
        value = stack.pop()
        if isinstance(value, pst.GetAttr) and _is_context(value.base):
            found.add(value.attr)
        elif isinstance(value, pst.HasAttr) and _is_context(value.base):
            found.add(value.attrs[0])
        elif _is_context(value):
            return None  # read whole
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, tuple):
            stack.extend(value)
        elif isinstance(value, pst.EntityUid | pst.EntityType | str | int | bool):
            continue
        elif hasattr(value, "__dataclass_fields__"):
            stack.extend(getattr(value, name) for name in value.__dataclass_fields__)
    return frozenset(found)


def _is_context(value: object) -> bool:
    return isinstance(value, pst.Var) and value.name == "context"


_MISSING = object()


def _frozen(value: Any) -> Any:
    """A hashable stand-in that tells apart what Cedar tells apart (``True`` from ``1``)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return kind, value
    if value is _MISSING:
        return _MISSING
    return "json", json.dumps(value, sort_keys=True, separators=(",", ":"))


class DecisionMemo:
    """Decisions by entities handle, then by (policy set, request as read); bounded per
    handle. A handle's decisions go with it: the shards of agents that did not change
    keep theirs when one agent changes (:mod:`proctor.policy.agent_shards`)."""

    def __init__(self) -> None:
        self._by_entities: weakref.WeakKeyDictionary[object, dict[tuple[Any, ...], Decision]]
        self._by_entities = weakref.WeakKeyDictionary()

    @staticmethod
    def key(policies: object, request: DecisionRequest, reads: tuple[str, ...]
            ) -> tuple[Any, ...]:
        """``reads``: :func:`memo_reads` of the request's slice."""
        context = request.context
        return (policies, request.principal, request.action, request.resource,
                *[_frozen(context.get(name, _MISSING)) for name in reads])

    def get(self, entities: object, key: tuple[Any, ...]) -> Decision | None:
        held = self._by_entities.get(entities)
        return held.get(key) if held is not None else None

    def put(self, entities: object, key: tuple[Any, ...], decision: Decision) -> None:
        if decision.errors:
            return
        held = self._by_entities.get(entities)
        if held is None:
            held = self._by_entities.setdefault(entities, {})
        if len(held) >= _MAX_ENTRIES:
            held.clear()
        held[key] = decision

    def clear(self) -> None:
        """Forget every decision (a new policy set: the old one is let go)."""
        self._by_entities = weakref.WeakKeyDictionary()


def memo_reads(nodes: Iterable[pst.Template]) -> tuple[str, ...] | None:
    """The attributes a decision on a slice of ``nodes`` depends on, sorted: what they
    read and what the engine reads itself (None: the whole context, not kept)."""
    reads = context_reads(nodes)
    return None if reads is None else tuple(sorted(reads.union(_ALWAYS_READ)))
