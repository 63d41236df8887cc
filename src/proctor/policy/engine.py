"""The decision point: ``decide(request) -> Decision``, which never raises.

Order of one decision: the arguments are checked against the tool's type;
Cedar evaluates the request against the slice of the active policy set that
can apply to it; then

- any evaluation or request error → deny (``engine_error``/``invalid_request``),
  even where Cedar itself would skip the erroring policy;
- a satisfied ``forbid`` → deny (``policy_forbid``);
- no satisfied ``permit`` → deny (``no_matching_permit``);
- a satisfied ``permit`` annotated ``@approval`` and no matching approval in
  the context (``context.approved``) → ``approval_required``;
- otherwise → allow (``policy_permit``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from proctor.errors import ConfigError, ProctorError
from proctor.policy.agent_shards import AgentShards
from proctor.policy.catalog import ToolCatalog, ToolSpec
from proctor.policy.compiled import CompiledPolicies, compile_sources
from proctor.policy.conformance import conforms, projectable
from proctor.policy.entities import EntityGraph, tool_entities
from proctor.policy.memo import DecisionMemo
from proctor.policy.model import Decision, DecisionRequest, EntityRef, Outcome, ReasonCode
from proctor.policy.schema import CompiledSchema, build_schema
from proctor.policy.source import LocatedPolicy

__all__ = ["PolicyEngine", "ShadowDifference"]

log = logging.getLogger(__name__)

_NO_POLICIES = Decision(
    Outcome.DENY,
    ReasonCode.NO_POLICIES,
    reasons=("no policy set is active: every request is denied",),
)
_MAX_SHADOW_RECORDS = 10_000


@dataclass(frozen=True, slots=True)
class ShadowDifference:
    """A request on which a candidate policy set would have decided otherwise."""

    request: DecisionRequest
    active: Decision
    candidate: Decision

    @classmethod
    def between(
        cls, request: DecisionRequest, active: Decision, candidate: Decision
    ) -> ShadowDifference | None:
        """The difference, if the outcome or the determining policies differ."""
        if (active.outcome, active.policy_ids) == (candidate.outcome, candidate.policy_ids):
            return None
        return cls(request, active, candidate)


class PolicyEngine:
    """Holds the schema, the entities (agents in shards: :mod:`proctor.policy.agent_shards`)
    and the active (and shadow) policy sets."""

    def __init__(
        self, catalog: ToolCatalog, principals: Iterable[dict[str, Any]] = ()
    ) -> None:
        self.catalog = catalog
        self.schema: CompiledSchema = build_schema(catalog)
        self.action_groups = {"call": frozenset(t.action_id for t in catalog)}
        self._principals = [e for e in principals if e["uid"]["type"] != "Agent"]
        self._agents = _build_agents(
            tool_entities(catalog) + self._principals, self.schema,
            [e for e in principals if e["uid"]["type"] == "Agent"])
        self._full: EntityGraph | None = None
        # changes to the entities one at a time (decisions never wait for it): a
        # catalog extension must not drop an agent's change made while it rebuilt
        self._changing = threading.RLock()
        self.active: CompiledPolicies | None = None
        self.shadow: CompiledPolicies | None = None
        self.shadow_differences: deque[ShadowDifference] = deque(maxlen=_MAX_SHADOW_RECORDS)
        # True: Cedar checks every request against the schema, even one proctor has
        # proven well-typed (see proctor.policy.conformance); the differential test's
        # reference, and a switch should a Cedar upgrade ever read values otherwise
        self.schema_checks_every_request = False
        # True: Cedar is given the whole context, even the attributes no policy of the
        # request's slice reads (see _read_only); the differential test's reference
        self.context_read_whole = False
        self._projectable: dict[str, bool] = {}
        # decisions kept for :meth:`decide`'s ``remember`` (proctor.policy.memo)
        self._memo = DecisionMemo()

    def compile(
        self, sources: dict[str, str], *, revision: int | None = None, digest: str = ""
    ) -> CompiledPolicies:
        """Validate ``sources`` against this engine's schema (raises on any problem)."""
        return compile_sources(
            sources, self.schema, self.action_groups, revision=revision, digest=digest
        )

    def activate(self, policies: CompiledPolicies) -> None:
        """Make ``policies`` the set every decision uses from now on."""
        self.active = policies
        self._memo.clear()

    def extend_catalog(self, tools: Iterable[ToolSpec], *, keep_known: bool = False) -> bool:
        """Add tools (or replace those with the same id) and rebuild the schema, the
        entity graph and the active and shadow sets against the new schema. Returns
        whether anything changed.

        For tools discovered at run time (the gateway's ``tools/list``). Raises
        :class:`~proctor.errors.PolicyValidationError` if a set no longer validates;
        the engine is then left exactly as it was.

        ``keep_known``: add only the tools the engine does not know *when the change
        is made* (under the lock), never replace one: for tools learnt from the store
        (:meth:`~proctor.policy.known_tools.KnownTools.teach`), whose caller looked at
        the catalog before, on any thread, while this process's gateway may have put
        its own definition of the tool since (its labels win; a stored one put over
        it would be decided on from then on).
        """
        with self._changing:
            by_id = {t.tool_id: t for t in self.catalog}
            added = [t for t in tools if not (keep_known and t.tool_id in by_id)]
            if not added:
                return False
            by_id.update((t.tool_id, t) for t in added)
            catalog = ToolCatalog(by_id.values())
            schema = build_schema(catalog)
            groups = {"call": frozenset(t.action_id for t in catalog)}
            agents = _build_agents(tool_entities(catalog) + self._principals, schema,
                                   self._agents.agents())
            active = _recompile(self.active, schema, groups)
            shadow = _recompile(self.shadow, schema, groups)
            # Everything is built before anything is replaced: a failure changes nothing.
            self.catalog, self.schema, self.action_groups = catalog, schema, groups
            self._agents, self._full, self.active, self.shadow = agents, None, active, shadow
            self._projectable = {}
            self._memo.clear()
        return True

    def set_principals(self, principals: Sequence[dict[str, Any]]) -> None:
        """Replace agents, humans and groups; every shard is rebuilt, here."""
        others = [e for e in principals if e["uid"]["type"] != "Agent"]
        with self._changing:
            agents = _build_agents(tool_entities(self.catalog) + others, self.schema,
                                   [e for e in principals if e["uid"]["type"] == "Agent"])
            self._principals, self._agents, self._full = others, agents, None
            self._memo.clear()

    def put_agent(self, entity: dict[str, Any]) -> None:
        """Add or replace one agent's entity (see
        :func:`~proctor.policy.entities.agent_entity`); only its shard is rebuilt,
        whatever the number of agents. What a later decision is evaluated on only
        when it names no entity of its own (:meth:`decide`'s ``agent``)."""
        if entity["uid"]["type"] != "Agent":
            raise ConfigError("only an agent's entity is put one at a time")
        with self._changing:
            self._agents.put(entity)
            self._full = None

    def remove_agent(self, agent_id: str) -> None:
        """Forget one agent's entity (its shard is rebuilt)."""
        with self._changing:
            self._agents.remove(agent_id)
            self._full = None

    def agent_entity(self, agent_id: str) -> dict[str, Any] | None:
        """The entity the engine holds for ``agent_id``, or None (a copy)."""
        found = self._agents.entity(agent_id)
        return dict(found) if found is not None else None

    def agent_entry(self, agent_id: str) -> Mapping[str, Any] | None:
        """The entity object the engine holds for ``agent_id`` (not a copy: read it, never
        change it), or None. A caller that builds the entity of an agent it read may take
        this one instead when they are equal, so that :meth:`decide`'s check that the
        engine holds it is one identity test."""
        return self._agents.entity(agent_id)

    def entities_for(self, principal: EntityRef) -> cedarpy.Entities:
        """The handle a request by ``principal`` is evaluated against: its agent's shard
        (the agent, its owner and groups, and every tool, human and group), or the
        base for any other principal."""
        if principal.type == "Agent":
            return self._agents.handle_for(principal.id)
        return self._agents.base

    @property
    def entities(self) -> EntityGraph:
        """Every entity in one graph, built on first use after a change (for explaining,
        comparisons and benchmarks; decisions use :meth:`entities_for`)."""
        full = self._full
        if full is None:
            full = EntityGraph(tool_entities(self.catalog) + self._principals
                               + [dict(e) for e in self._agents.agents()], self.schema)
            self._full = full
        return full

    def decide(self, request: DecisionRequest, *, remember: bool = False,
               agent: Mapping[str, Any] | None = None) -> Decision:
        """Decide ``request`` with the active policy set; shadow-evaluate the candidate.

        ``remember``: the decision may be the one taken on the same request before,
        and is kept for the next, where Cedar's answer cannot differ
        (:mod:`proctor.policy.memo`: the same policy set and entities, the same values
        of what the policies read). For issuance, which asks the same again and again;
        a tool call's arguments seldom repeat.

        ``agent``: the entity of the request's principal (an agent) as the caller read
        and checked it, the one its write confirms. The decision is evaluated on that
        entity, whatever another thread put for the agent meanwhile (the change feed an
        older read of it, another decision its own): against its shard's handle when
        the shard holds that object (one identity test), else against the shard rebuilt
        with it put. Without it: the entity the engine holds now, which a concurrent
        put may have made older than what the caller read (for explaining and tests).
        """
        entities: cedarpy.Entities | Decision
        if agent is None:
            entities = self.entities_for(request.principal)
        else:  # held as the principal's already (one identity test), else put
            held = self._agents.handle_with(agent, request.principal.id)
            entities = held if held is not None else self._holding(request, agent)
            if isinstance(entities, Decision):
                return entities
        decision = self._evaluate_on(self.active, request, entities, remember)
        shadow = self.shadow
        if shadow is not None:
            difference = ShadowDifference.between(
                request, decision, self._evaluate_on(shadow, request, entities, remember))
            if difference is not None:
                self.shadow_differences.append(difference)
        return decision

    def _holding(self, request: DecisionRequest, agent: Mapping[str, Any]
                 ) -> cedarpy.Entities | Decision:
        """A handle holding ``agent``, put now (its shard holds another version of it); a
        deny if ``agent`` is not the principal's or cannot be put."""
        try:
            principal = request.principal
            if principal.type != "Agent" or agent["uid"]["id"] != principal.id:
                raise ConfigError("the agent's entity is not the request's principal")
            with self._changing:
                handle = self._agents.put(agent)
                self._full = None
            return handle
        except Exception as exc:  # the decision point must answer, never raise
            log.error("decision on `%s` failed: the agent's entity could not be held (%s)",
                      request.action, type(exc).__name__)
            message = f"decision failed: {type(exc).__name__}"
            revision = self.active.revision if self.active is not None else None
            return Decision(Outcome.DENY, ReasonCode.ENGINE_ERROR,
                            reasons=(message,), errors=(message,), revision=revision)

    def evaluate(self, policies: CompiledPolicies | None, request: DecisionRequest, *,
                 remember: bool = False) -> Decision:
        """Decide ``request`` against ``policies`` and the entities the engine holds now;
        any error is a deny that carries it. ``remember``: as :meth:`decide`'s."""
        return self._evaluate_on(policies, request, self.entities_for(request.principal),
                                 remember)

    def _evaluate_on(self, policies: CompiledPolicies | None, request: DecisionRequest,
                     entities: cedarpy.Entities, remember: bool) -> Decision:
        """:meth:`evaluate` against ``entities``."""
        if policies is None:
            return _NO_POLICIES
        if not remember or self.schema_checks_every_request:
            return self._evaluate(policies, request, entities)
        reads = policies.memo_reads(request.action, str(request.resource))
        if reads is None:
            return self._evaluate(policies, request, entities)
        try:
            cedar_request = self._cedar_request(request)
            if self._schema_for(request, cedar_request) is not None:
                # not proven well-typed: Cedar's check reads every value, not only those
                # the policies read
                return self._evaluate(policies, request, entities)
            key = self._memo.key(policies, request, reads)
        except Exception:  # a value JSON cannot write, say: decided, not kept
            return self._evaluate(policies, request, entities)
        found = self._memo.get(entities, key)
        if found is not None:
            return found
        proven: list[bool] = []
        decision = self._evaluate(policies, request, entities, proven)
        if all(proven):  # each Cedar call of it without the schema
            self._memo.put(entities, key, decision)
        return decision

    def _evaluate(self, policies: CompiledPolicies, request: DecisionRequest,
                  entities: cedarpy.Entities, proven: list[bool] | None = None) -> Decision:
        """:meth:`evaluate` against ``entities``; ``proven`` gets, per Cedar call, whether
        the request went without the schema (a call that raised: False)."""
        revision = policies.revision
        if proven is not None:
            proven.append(False)
        try:
            cedar_request = self._cedar_request(request)
            resource = str(request.resource)
            schema = self._schema_for(request, cedar_request)
            if proven is not None:
                proven[-1] = schema is None
            whole = cedar_request["context"]
            context = whole
            if schema is None and not self.context_read_whole:
                reads = policies.memo_reads(request.action, resource)
                if reads is not None and len(read := _read_only(whole, reads)) < len(whole):
                    context = read
            sliced = policies.slice_for(request.action, resource)
            # the context as text, by an encoder made once (cedarpy's json.dumps builds
            # one per call): the same text, which cedarpy then passes on as it is
            cedar_request["context"] = context_json(context)
            result = cedarpy.is_authorized(cedar_request, sliced, entities, schema=schema)
            if result.diagnostics.errors and context is not whole:
                # an error's text may name the record's attributes: Cedar's own, on the
                # context as it was built (a failed evaluation is a deny either way)
                cedar_request["context"] = context_json(whole)
                result = cedarpy.is_authorized(cedar_request, sliced, entities, schema=schema)
            decision = _interpret(result, request, policies)
            if _held_for_approval(decision, request, policies):
                return self._unless_approved(policies, request, decision, entities, proven)
            return decision
        except ProctorError as exc:
            return Decision(Outcome.DENY, ReasonCode.INVALID_REQUEST,
                            reasons=(exc.message,), errors=(exc.message,), revision=revision)
        except Exception as exc:  # the decision point must answer, never raise
            # the type only: a traceback's text could carry argument values
            log.error("decision on `%s` failed: %s", request.action, type(exc).__name__)
            message = f"decision failed: {type(exc).__name__}"
            return Decision(Outcome.DENY, ReasonCode.ENGINE_ERROR,
                            reasons=(message,), errors=(message,), revision=revision)

    def _schema_for(self, request: DecisionRequest,
                    cedar_request: dict[str, Any]) -> cedarpy.Schema | None:
        """None when the request is proven well-typed (Cedar need not check it again),
        else the schema for Cedar to check it against."""
        if self.schema_checks_every_request:
            return self.schema.handle
        action = request.action
        projected = self._projectable.get(action)
        if projected is None:
            shape = self.catalog.args_shape(action)
            projected = shape is not None and projectable(shape)
            if shape is not None:  # only the catalog's actions: a request names any
                self._projectable[action] = projected
        context = cedar_request["context"]
        if conforms(action, request.principal.type, request.resource.type, context,
                    projected=projected and "args" in request.context):
            return None
        return self.schema.handle

    def _unless_approved(self, policies: CompiledPolicies, request: DecisionRequest,
                         denied: Decision, entities: cedarpy.Entities,
                         proven: list[bool] | None) -> Decision:
        """A deny by forbids that all carry ``@approval`` ("forbid unless a human
        approves", written with ``!context.approved``): if the call would be allowed
        once approved, it needs an approval; otherwise the deny stands."""
        approved = DecisionRequest(request.principal, request.action, request.resource,
                                   {**request.context, "approved": True})
        if self._evaluate(policies, approved, entities, proven).outcome is not Outcome.ALLOW:
            return denied
        found = [policies.policies[pid] for pid in denied.policy_ids]
        return Decision(Outcome.APPROVAL_REQUIRED, ReasonCode.APPROVAL_REQUIRED,
                        policy_ids=denied.policy_ids,
                        reasons=tuple(_reason(p, "approval") for p in found),
                        revision=denied.revision)

    def _cedar_request(self, request: DecisionRequest) -> dict[str, Any]:
        context = request.context
        shape = self.catalog.args_shape(request.action)
        if shape is not None and "args" in context:
            context = {**context, "args": shape.project(context["args"])}
        return {
            "principal": request.principal.as_json(),
            "action": {"type": "Action", "id": request.action},
            "resource": request.resource.as_json(),
            "context": context,
        }


# `json.dumps(value)` (its defaults: ASCII, ", " and ": ", NaN allowed) by its C core
# made once. No circular check: a context that holds itself fails as deep recursion
# rather than as a circular reference, and is then dumped by json.dumps, which says so.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # absent without _json
_context_encoder = None if _make_encoder is None else _make_encoder(
    None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ",
    False, False, True)


def context_json(context: Any) -> str:
    """``json.dumps(context)``, to the character: what cedarpy makes of a context it
    is given as a dict, made here without a new encoder per call."""
    if _context_encoder is None:
        return json.dumps(context)
    try:
        return "".join(_context_encoder(context, 0))
    except (RecursionError, TypeError, ValueError):  # json.dumps raises what it raises
        return json.dumps(context)


# attributes a proven context keeps though no policy reads them: the values
# conformance does not prove Cedar can build (the arguments, as the tool's shape made
# them; the source address, which Cedar parses), so that one it cannot is still refused
_KEPT_UNREAD = ("args", "source_ip")


def _read_only(context: dict[str, Any], reads: tuple[str, ...]) -> dict[str, Any]:
    """A proven context (:mod:`proctor.policy.conformance`) without the attributes no
    policy of the slice reads (``reads``: :meth:`CompiledPolicies.memo_reads`).

    Cedar decides on what policies read, and a policy reads the context only through
    ``context.a`` or ``context has a`` (:func:`~proctor.policy.memo.context_reads`, the
    memo's own reasoning); parsing the rest (the task, the time, the grant's constrained
    arguments…) was over a quarter of a decision's Cedar call. Only for a context
    proven well-typed: Cedar, given the schema, checks every attribute. The
    differential test (``tests/policy/test_context_read.py``) holds it to the engine's
    answers on the whole context."""
    return {name: value for name, value in context.items()
            if name in reads or name in _KEPT_UNREAD}


def _build_agents(base: list[dict[str, Any]], schema: CompiledSchema,
                  agents: Iterable[Mapping[str, Any]]) -> AgentShards:
    """The base graph (checked against the schema) and the agents' shards over it."""
    graph = EntityGraph(base, schema)
    uids = frozenset((str(e["uid"]["type"]), str(e["uid"]["id"])) for e in base)
    return AgentShards(graph.handle, uids, agents)


def _recompile(policies: CompiledPolicies | None, schema: CompiledSchema,
               groups: dict[str, frozenset[str]]) -> CompiledPolicies | None:
    """``policies`` validated again against ``schema`` (same ids, same revision)."""
    if policies is None:
        return None
    sources: dict[str, list[str]] = {}
    for policy in policies.policies.values():  # in file order: unnamed ids stay `file#n`
        sources.setdefault(policy.file, []).append(policy.text)
    return compile_sources({f: "\n".join(texts) for f, texts in sources.items()}, schema,
                           groups, revision=policies.revision, digest=policies.digest)


def _interpret(
    result: cedarpy.AuthzResult, request: DecisionRequest, policies: CompiledPolicies
) -> Decision:
    revision = policies.revision
    diagnostics = result.diagnostics
    errors = tuple(diagnostics.errors)
    if errors:
        if any(e.startswith("failed to build request") for e in errors):
            message = (
                f"request does not match the schema for action `{request.action}` "
                f"(principal {request.principal.type}, resource {request.resource.type})"
            )
            return Decision(Outcome.DENY, ReasonCode.INVALID_REQUEST, reasons=(message,),
                            errors=(message,), revision=revision)
        # Sorted: Cedar's order depends on the slice and on hashing, and a decision
        # must not (shadow comparisons and audit records compare them).
        return Decision(Outcome.DENY, ReasonCode.ENGINE_ERROR,
                        policy_ids=tuple(sorted(diagnostics.reasons)),
                        reasons=("a policy failed to evaluate, so the request is denied",),
                        errors=tuple(sorted(errors)), revision=revision)
    ids = tuple(sorted(diagnostics.reasons))
    found = [policies.policies[pid] for pid in ids]
    if result.decision is cedarpy.Decision.Allow:
        needing = [p for p in found if "approval" in p.annotations]
        if needing and request.context.get("approved") is not True:
            return Decision(
                Outcome.APPROVAL_REQUIRED, ReasonCode.APPROVAL_REQUIRED,
                policy_ids=tuple(p.id for p in needing),
                reasons=tuple(_reason(p, "approval") for p in needing),
                revision=revision,
            )
        reasons = tuple(
            f"approved: {_reason(p, 'approval')}" if p in needing else _reason(p) for p in found
        )
        return Decision(Outcome.ALLOW, ReasonCode.PERMITTED, policy_ids=ids,
                        reasons=reasons, revision=revision)
    if found:
        return Decision(Outcome.DENY, ReasonCode.FORBIDDEN, policy_ids=ids,
                        reasons=tuple(_reason(p) for p in found), revision=revision)
    message = f"no policy permits `{request.action}` for {request.principal}"
    return Decision(Outcome.DENY, ReasonCode.NO_PERMIT, reasons=(message,), revision=revision)


def _held_for_approval(decision: Decision, request: DecisionRequest,
                       policies: CompiledPolicies) -> bool:
    if decision.code is not ReasonCode.FORBIDDEN or request.context.get("approved") is True:
        return False
    found = [policies.policies[pid] for pid in decision.policy_ids]
    return bool(found) and all(p.effect == "forbid" and "approval" in p.annotations
                               for p in found)


def _reason(policy: LocatedPolicy, preferred: str = "reason") -> str:
    annotations = policy.annotations
    return (
        annotations.get(preferred)
        or annotations.get("reason")
        or f"{policy.effect} policy `{policy.id}` applies"
    )
