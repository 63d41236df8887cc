"""A validated policy set, sliced by the action and resource each policy is scoped to.

Cedar scans every policy of a set on each request. Most policies name one
action (a tool) or one resource, so proctor keeps, per (action, resource), a
pre-parsed ``PolicySet`` holding only the policies that could apply to it:
those whose action scope covers the action and whose resource scope is either
open or that exact resource. Anything else (``resource in Server::"x"``,
``is`` constraints) is kept in every slice of its action, because it depends
on entity data. A policy outside a request's slice can never be satisfied by
that request, so the sliced answer equals the unsliced one; a differential
test checks this on generated policies.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import cedarpy
from cedarpy import pst

from proctor.errors import Diagnostic, PolicyValidationError
from proctor.human_ids import canonical_human_id, human_id_problem
from proctor.policy.memo import memo_reads
from proctor.policy.model import quote_id
from proctor.policy.schema import CompiledSchema
from proctor.policy.source import LocatedPolicy, forget_parsed, nests_too_deep, parse_sources

__all__ = ["CompiledPolicies", "compile_sources", "forget_compiled"]

_PARALLEL_FROM_BYTES = 32 * 1024  # below this, threads cost more than they save
_POSITIONAL = re.compile(r"policy `?policy(\d+)`?")

SliceKey = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class _Scope:
    actions: frozenset[str] | None  # None: any action
    resource: str | None  # an exact resource uid, or None: any resource


class CompiledPolicies:
    """Policies ready for decisions: validated, indexed, with one handle per slice."""

    def __init__(
        self,
        policies: Iterable[LocatedPolicy],
        action_groups: Mapping[str, frozenset[str]],
        *,
        revision: int | None = None,
        digest: str = "",
    ) -> None:
        self.policies = {p.id: p for p in policies}
        self.revision = revision
        self.digest = digest
        self._scopes = {p.id: _scope(p.node, action_groups) for p in self.policies.values()}
        self._any_action = [pid for pid, s in self._scopes.items() if s.actions is None]
        self._by_action: dict[str, list[str]] = {}
        for pid, scope in self._scopes.items():
            for action in scope.actions or ():
                self._by_action.setdefault(action, []).append(pid)
        self._exact: dict[str, frozenset[str]] = {}
        for action in [*self._by_action, ""]:
            ids = self._candidates(action)
            self._exact[action] = frozenset(
                r for pid in ids if (r := self._scopes[pid].resource) is not None
            )
        self._slices: dict[SliceKey, cedarpy.PolicySet] = {}
        self._reads: dict[SliceKey, tuple[str, ...] | None] = {}
        self._lock = threading.Lock()

    @cached_property
    def full(self) -> cedarpy.PolicySet:
        """All policies in one handle, unsliced (for comparisons and benchmarks)."""
        return _policy_set(self.policies.values())

    def __len__(self) -> int:
        return len(self.policies)

    def slice_for(self, action: str, resource: str) -> cedarpy.PolicySet:
        """The pre-parsed set of policies that can apply to ``action`` on ``resource``."""
        key = self._slice_key(action, resource)
        handle = self._slices.get(key)
        if handle is None:
            handle = self._build_slice(key)
        return handle

    def _slice_key(self, action: str, resource: str) -> SliceKey:
        if action not in self._by_action:
            action = ""  # no policy names it: one shared slice, however many such names come
        return action, resource if resource in self._exact[action] else None

    def memo_reads(self, action: str, resource: str) -> tuple[str, ...] | None:
        """What a decision on :meth:`slice_for`'s set reads of the context
        (:func:`~proctor.policy.memo.memo_reads`; None: all of it)."""
        key = self._slice_key(action, resource)
        try:
            return self._reads[key]
        except KeyError:
            pass
        ids = self.slice_ids(key[0], key[1] or "")
        reads = memo_reads(self.policies[pid].node for pid in ids)
        with self._lock:
            return self._reads.setdefault(key, reads)

    def slice_ids(self, action: str, resource: str) -> list[str]:
        """The ids in :meth:`slice_for`'s set, for explaining a decision."""
        return [
            pid
            for pid in self._candidates(action)
            if self._scopes[pid].resource in (None, resource)
        ]

    def _candidates(self, action: str) -> list[str]:
        return self._any_action + self._by_action.get(action, [])

    def _build_slice(self, key: SliceKey) -> cedarpy.PolicySet:
        action, resource = key
        handle = _policy_set(self.policies[pid] for pid in self.slice_ids(action, resource or ""))
        with self._lock:
            return self._slices.setdefault(key, handle)


def compile_sources(
    sources: Mapping[str, str],
    schema: CompiledSchema,
    action_groups: Mapping[str, frozenset[str]],
    *,
    revision: int | None = None,
    digest: str = "",
) -> CompiledPolicies:
    """Parse and validate ``sources`` against ``schema``.

    Raises :class:`PolicyValidationError` with every problem located; nothing is
    returned for an invalid set, so it can never become active.
    """
    if not sources:
        raise PolicyValidationError(
            [Diagnostic("<policies>", 0, 0, "no policy files: every request would be denied")]
        )
    # Cedar's validator is the largest cost of a load and releases the GIL: on a
    # large set it runs on other cores while this thread parses. A file nested past what
    # Cedar may be given is never handed to it (parse_sources refuses it below): its
    # validator overflowed a worker's stack and killed the process.
    workers = min(len(sources), os.cpu_count() or 1, 4)
    parallel = workers > 1 and sum(map(len, sources.values())) >= _PARALLEL_FROM_BYTES
    with ThreadPoolExecutor(workers if parallel else 1) as pool:
        pending = {name: pool.submit(_validate_text, text, schema)
                   for name, text in sources.items()
                   if not nests_too_deep(text)} if parallel else {}
        policies = parse_sources(sources)
        if not policies:
            raise PolicyValidationError(
                [Diagnostic("<policies>", 0, 0, "no policies: every request would be denied")]
            )
        by_file: dict[str, list[LocatedPolicy]] = {}
        for policy in policies:
            by_file.setdefault(policy.file, []).append(policy)
        # A forbid with `@approval` holds a call for a human; unless its condition
        # reads `context.approved`, no approval could ever lift it.
        problems = [
            Diagnostic(p.file, p.line, p.column, "`@approval` on a forbid needs "
                       "`!context.approved` in its condition, or no approval could lift it",
                       p.id)
            for p in policies if "approval" in p.annotations and p.effect == "forbid"
            and "context.approved" not in p.text
        ]
        problems.extend(_human_problems(policies))
        for name, located in by_file.items():
            future = pending.get(name)
            errors = future.result() if future else _validate_text(sources[name], schema)
            problems.extend(_locate_validation_error(name, located, e) for e in errors)
    if problems:
        raise PolicyValidationError(problems)
    return CompiledPolicies(policies, action_groups, revision=revision, digest=digest)


def forget_compiled() -> None:
    """Empty the parses and validations kept per file text, so that the next compile of a
    file is a cold one (for a benchmark of a load)."""
    forget_parsed()
    _validated.cache_clear()
    _human_found.clear()


def _human_problems(policies: Iterable[LocatedPolicy]) -> list[Diagnostic]:
    """A ``Human::"…"`` a policy names must be in the canonical form every human id is
    kept in, or the policy would never match the human it means (a ``forbid`` would
    silently stop applying)."""
    return [Diagnostic(policy.file, policy.line, policy.column, message, policy.id)
            for policy in policies for message in _human_messages(policy)]


# what _human_messages found, per policy text (a policy's node is its text's parse)
_human_found: dict[str, tuple[str, ...]] = {}
_HUMAN_FOUND_MAX = 4096


def _human_messages(policy: LocatedPolicy) -> tuple[str, ...]:
    """The problems of the humans ``policy`` names, kept per policy text for the process
    (as its parse is): walking every policy's tree was a fifth of a runtime's open."""
    found = _human_found.get(policy.text)
    if found is not None:
        return found
    messages = []
    for uid in sorted(pst.entity_uids(policy.node), key=lambda u: u.id):
        if uid.type.basename != "Human" or uid.type.namespace:
            continue
        problem = human_id_problem(uid.id)
        canonical = canonical_human_id(uid.id)
        if problem is None and canonical == uid.id:
            continue
        messages.append(f"human `{uid.id}` is not in the canonical form humans are compared "
                        f"in: write `Human::{quote_id(canonical)}`" if problem is None
                        else f"a `Human` id named here {problem}")
    found = tuple(messages)
    if len(_human_found) >= _HUMAN_FOUND_MAX:
        _human_found.clear()
    _human_found[policy.text] = found
    return found


def _validate_text(text: str, schema: CompiledSchema) -> tuple[cedarpy.ValidationError, ...]:
    return _validated(text, schema.text)


@functools.lru_cache(maxsize=32)
def _validated(text: str, schema_text: str) -> tuple[cedarpy.ValidationError, ...]:
    """Cedar's validation of one file against one schema, kept per pair for the process
    (as its parse is), as a runtime's unchanged files are validated again at every open
    and revision load; :func:`forget_compiled` empties both."""
    handle = CompiledSchema(schema_text).handle  # the schema's own, kept per text
    return tuple(cedarpy.validate_policies(text, handle, release_gil=True).errors)


def _locate_validation_error(
    name: str, located: list[LocatedPolicy], error: cedarpy.ValidationError
) -> Diagnostic:
    match = re.fullmatch(r"policy(\d+)", error.policy_id or "")
    if match and int(match.group(1)) < len(located):
        policy = located[int(match.group(1))]
        message = _POSITIONAL.sub(f"policy `{policy.id}`", error.error)
        return Diagnostic(name, policy.line, policy.column, message, policy.id)
    return Diagnostic(name, 1, 1, error.error)


def _scope(node: pst.Template, action_groups: Mapping[str, frozenset[str]]) -> _Scope:
    actions: frozenset[str] | None = None
    if isinstance(node.action, pst.ActionEq):
        actions = frozenset({node.action.entity.id})
    elif isinstance(node.action, pst.ActionIn):
        expanded: set[str] = set()
        for uid in node.action.entities:
            expanded.add(uid.id)
            expanded |= action_groups.get(uid.id, frozenset())
        actions = frozenset(expanded)
    resource = None
    if isinstance(node.resource, pst.ScopeEq) and isinstance(node.resource.entity, pst.EntityUid):
        uid = node.resource.entity
        resource = f"{uid.type}::{quote_id(uid.id)}"
    return _Scope(actions, resource)


def _policy_set(policies: Iterable[LocatedPolicy]) -> cedarpy.PolicySet:
    nodes = {p.id: p.node for p in policies}
    return cedarpy.PolicySet.from_pst(
        pst.PolicySet(templates={}, static_policies=nodes, template_links=())
    )
