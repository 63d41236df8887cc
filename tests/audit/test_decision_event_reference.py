"""A decision's event, built the fast way, is the event the plain construction builds.

:func:`~proctor.audit.decision_event` masks the detail and the target itself, takes
records and actors it made before, builds the event without the dataclass's
``__init__`` and writes the request digest around the context's dump. The reference
below is the code it replaced, kept as it was: over generated requests and decisions
(secrets in the purpose, the arguments, the reasons and the errors included) the two
give equal events, the same stored bytes and the same digest.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.audit import Actor, ActorType, AuditEvent, DecisionRecord, decision_event
from proctor.audit.features import argument_features
from proctor.audit.masking import mask, mask_label, mask_labels
from proctor.audit.recording import _RECORDS, request_digest
from proctor.policy import Decision, DecisionRequest, EntityRef, Outcome, ReasonCode
from proctor.policy.context import call_context

# --- the reference: decision_event and request_digest as they were (0faad07) -------------

_OUTCOMES = {Outcome.ALLOW: "allowed", Outcome.DENY: "denied",
             Outcome.APPROVAL_REQUIRED: "pending_approval"}
_ACTOR_TYPES = {"Agent": ActorType.AGENT, "Human": ActorType.HUMAN}
_PLAIN_CONTEXT = frozenset({"task", "on_behalf_of", "delegation", "time", "approved",
                            "sensitivity_seen", "source_ip"})


def reference_digest(request: DecisionRequest) -> str:
    context = {key: value if key in _PLAIN_CONTEXT
               else mask_label(value) if key == "purpose" and type(value) is str
               else mask(value) for key, value in request.context.items()}
    document = {"principal": request.principal.as_json(), "action": request.action,
                "resource": request.resource.as_json(), "context": context}
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def _source(context: Mapping[str, Any]) -> str | None:
    source = context.get("source_ip")
    if isinstance(source, Mapping):
        source = source.get("__extn", {}).get("arg")
    return str(source) if source else None


def reference_event(request: DecisionRequest, decision: Decision, *, now: datetime,
                    grant: str | None, event_id: str) -> AuditEvent:
    context = request.context
    delegation = context.get("delegation")
    chain = delegation.get("chain", ()) if isinstance(delegation, Mapping) else ()
    detail: dict[str, Any] = {}
    if context.get("purpose"):
        detail["purpose"] = str(context["purpose"])
    if decision.errors:
        detail["errors"] = list(decision.errors)
    args = context.get("args")
    if isinstance(args, Mapping):
        features = argument_features(args)
        if features:
            detail["args"] = features
    return AuditEvent(
        id=event_id, time=now,
        actor=Actor(_ACTOR_TYPES.get(request.principal.type, ActorType.SYSTEM),
                    request.principal.id, str(context.get("on_behalf_of", ""))),
        action=request.action, target=str(request.resource),
        outcome=_OUTCOMES[decision.outcome], task=str(context.get("task", "")),
        delegation_chain=tuple(str(a) for a in chain),
        decision=DecisionRecord(decision.outcome.value, decision.code.value,
                                decision.policy_ids, decision.revision, decision.reasons),
        request_digest=reference_digest(request), grant=grant, source=_source(context),
        detail=detail,
    )


# --- generated requests and decisions ------------------------------------------------------

# credential-shaped values made at run time (as tests/gateway/upstream_server.py makes them),
# never written in the repository
_PASSWORD = secrets.token_urlsafe(9)
SECRETS = [f"Bearer {secrets.token_urlsafe(12)}", "ghp_" + secrets.token_hex(18),
           f"postgresql://app:{_PASSWORD}@db.internal/x", f"password={_PASSWORD}",
           "AKIA" + secrets.token_hex(8).upper(), "sk-" + secrets.token_hex(20)]
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(SECRETS)
names = texts | st.sampled_from(["token", "api_key", "password", "repo_path", "to", "amount",
                                 "url", "grant", "args"])
leaves = (st.none() | st.booleans() | st.integers() | texts
          | st.sampled_from(["alice@example.com", "https://api.x.io/v1", "mail bob@y.org"]))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(names, inner, max_size=3), max_leaves=10)
NOW = datetime(2026, 12, 7, 8, 0, 0, 123456, tzinfo=UTC)


@st.composite
def requests(draw: st.DrawFn) -> DecisionRequest:
    kind = draw(st.sampled_from(["Agent", "Human", "Service"]))
    principal = EntityRef(kind, draw(texts))
    tool = draw(texts)
    if draw(st.booleans()):  # a tool call's context, as the enforcer builds it
        context = call_context(
            now=NOW, args=draw(st.dictionaries(names, values, max_size=4)), task=draw(texts),
            purpose=draw(texts), on_behalf_of=draw(st.sampled_from(["", "alice@acme.example"])),
            delegation_chain=draw(st.lists(texts, max_size=2)),
            source_ip=draw(st.none() | st.just("10.0.0.7")),
            approved=draw(st.booleans()), grant_constrained=draw(st.lists(names, max_size=3)))
    else:  # anything a caller of decision_event may pass
        context = draw(st.dictionaries(
            names | st.sampled_from(["purpose", "task", "delegation", "grant", "args"]),
            values, max_size=5))
    return DecisionRequest(principal, f"tool:{tool}", EntityRef("Tool", tool), context)


decisions = st.builds(
    Decision, st.sampled_from(Outcome), st.sampled_from(ReasonCode),
    st.lists(texts, max_size=2).map(tuple), st.lists(texts, max_size=2).map(tuple),
    st.lists(texts, max_size=2).map(tuple), st.none() | st.integers(0, 2**40))


@settings(max_examples=400)
@given(requests(), decisions, st.none() | texts)
def test_the_fast_decision_event_is_the_event_the_plain_construction_builds(
        request: DecisionRequest, decision: Decision, grant: str | None) -> None:
    for _ in range(2):  # the second time from the records and actors remembered
        fast = decision_event(request, decision, now=NOW, grant=grant, event_id="e-1")
        reference = reference_event(request, decision, now=NOW, grant=grant, event_id="e-1")
        assert fast == reference
        assert fast.canonical_body() == reference.canonical_body()
        assert fast.as_json() == reference.as_json()


# Hypothesis's 100 examples: the test above compares whole events, their digests included,
# over 400 requests of the same strategy; this one names the digest when it alone differs.
@given(requests())
def test_the_request_digest_is_the_digest_of_the_reference(request: DecisionRequest) -> None:
    assert request_digest(request) == reference_digest(request)


@given(values)
def test_masking_as_labels_masks_as_mask_does(value: object) -> None:
    assert mask_labels(value) == mask(value)
    assert mask_labels(value) == mask(value)  # labels found clean are remembered


def test_a_decision_whose_reasons_held_a_secret_is_masked_and_not_remembered() -> None:
    request = DecisionRequest(EntityRef("Agent", "a"), "tool:t", EntityRef("Tool", "t"),
                              {"purpose": "p"})
    decision = Decision(Outcome.DENY, ReasonCode.FORBIDDEN, ("p1",),
                        ("leaked ghp_" + "A" * 36,))
    for _ in range(2):
        event = decision_event(request, decision, now=NOW)
        assert event.decision is not None
        assert event.decision.reasons == ("leaked [masked:github_token]",)
    assert not any("ghp_" in reason for key in _RECORDS for reason in key[4])


def test_a_decision_built_with_lists_is_recorded_as_the_plain_construction_records_it() -> None:
    request = DecisionRequest(EntityRef("Agent", "a"), "tool:t", EntityRef("Tool", "t"),
                              {"purpose": "p"})
    decision = Decision(Outcome.ALLOW, ReasonCode.PERMITTED,
                        ["p1"], ["r1"])  # type: ignore[arg-type]
    fast = decision_event(request, decision, now=NOW, event_id="e-1")
    reference = reference_event(request, decision, now=NOW, grant=None, event_id="e-1")
    assert fast.canonical_body() == reference.canonical_body()
