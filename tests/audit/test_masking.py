from __future__ import annotations

import secrets

import pytest

from proctor.audit import Actor, ActorType, AuditEvent, DecisionRecord, mask, mask_text
from proctor.audit.masking import _CLEAN, is_secret_key, mask_label
from proctor.clock import FrozenClock


@pytest.mark.parametrize("key", ["password", "db_password", "X-Api-Key", "apiKey",
                                 "Authorization", "client_secret", "accessToken", "Set-Cookie",
                                 "private_key", "credentials"])
def test_keys_that_name_secrets_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["user", "tokens_used", "keyboard", "shipping", "passage",
                                 "repo_path", "author"])
def test_ordinary_keys_are_left_alone(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(("text", "kind"), [
    ("Authorization: Bearer abc.def-ghi", "bearer"),
    ("Basic dXNlcjpwYXNzd29yZA==", "basic"),
    ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl", "jwt"),
    ("postgresql://app:hunter2@db.internal/prod", "url_password"),
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
    ("ghp_" + "A" * 36, "github_token"),
    ("glpat-" + "b" * 20, "gitlab_token"),
    ("xoxb-1234567890-abcdef", "slack_token"),
    ("sk_live_" + "c" * 24, "stripe_key"),
    ("sk-proj-" + "d" * 40, "api_key"),
    ("AIza" + "e" * 35, "google_api_key"),
    ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----", "private_key"),
])
def test_well_known_credential_formats_are_masked_inside_text(text: str, kind: str) -> None:
    masked = mask_text(f"before {text} after")
    assert f"[masked:{kind}]" in masked
    assert masked.startswith("before ") and masked.endswith(" after")


def test_a_label_is_masked_every_time_and_only_a_clean_one_is_remembered() -> None:
    leaky = "deploy with postgresql://app:hunter2@db.internal/prod"
    assert mask_label(leaky) == mask_text(leaky) != leaky
    assert mask_label(leaky) == mask_text(leaky)  # again: masked, never remembered
    assert leaky not in _CLEAN
    assert mask_label("fix the build") == "fix the build"
    assert "fix the build" in _CLEAN


def test_masking_walks_mappings_and_lists() -> None:
    value = {"user": "alice", "headers": {"X-Api-Key": "k1"},
             "steps": [{"password": "p"}, "token ghp_" + "z" * 36], "count": 3, "empty": ""}
    assert mask(value) == {"user": "alice", "headers": {"X-Api-Key": "[masked]"},
                           "steps": [{"password": "[masked]"}, "token [masked:github_token]"],
                           "count": 3, "empty": ""}


def test_an_event_cannot_hold_a_secret(clock: FrozenClock) -> None:
    event = AuditEvent(id="e1", time=clock.now(), actor=Actor(ActorType.AGENT, "a"),
                       action="tool:http/get", target="https://bot:s3cret@api.example/x",
                       outcome="allowed", detail={"api_key": "k", "note": "Bearer xyz"})
    assert "s3cret" not in str(event.as_json())
    assert event.detail == {"api_key": "[masked]", "note": "Bearer [masked:bearer]"}


def test_every_way_to_make_an_event_masks_what_it_is_given(clock: FrozenClock) -> None:
    """No constructor takes parts as masked already: a decision's event masks its target
    and its detail's parts itself, as the plain construction and reading back do."""
    leak = "ghp_" + secrets.token_hex(18)
    actor = Actor(ActorType.AGENT, "a")
    made = [
        AuditEvent(id="e1", time=clock.now(), actor=actor, action="tool:git/push",
                   target=f"Tool::{leak}", outcome="allowed", detail={"note": leak}),
        AuditEvent.from_json({"v": 1, "id": "e1", "time": clock.now().isoformat(),
                              "actor": actor.as_json(), "action": "tool:git/push",
                              "target": f"Tool::{leak}", "outcome": "allowed",
                              "detail": {"note": leak}}),
        AuditEvent.of_decision("e1", clock.now(), actor, "tool:git/push", f"Tool::{leak}",
                               "allowed", "t1", (), DecisionRecord("allow", "policy_permit"),
                               "0" * 64, None, None, holder=leak, purpose=f"push with {leak}",
                               errors=[f"refused {leak}"],
                               args={"url": f"https://x:{leak}@git.example/r"}),
    ]
    for event in made:
        assert leak not in event.canonical_body().decode("utf-8")
        assert event.target == "Tool::[masked:github_token]"
    assert [n for n, v in vars(AuditEvent).items()
            if isinstance(v, classmethod)] == ["of_decision", "from_json"]


def test_an_event_refuses_floats_and_naive_times(clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="floating-point"):
        AuditEvent(id="e1", time=clock.now(), actor=Actor(ActorType.AGENT, "a"), action="x",
                   target="y", outcome="allowed", detail={"amount": 1.5})
    with pytest.raises(ValueError, match="aware"):
        AuditEvent(id="e1", time=clock.now().replace(tzinfo=None),
                   actor=Actor(ActorType.AGENT, "a"), action="x", target="y", outcome="ok")


def test_the_request_digest_is_taken_after_masking(clock: FrozenClock) -> None:
    from proctor.audit.recording import request_digest
    from proctor.policy import DecisionRequest, EntityRef, call_context

    def digest(args: dict[str, object]) -> str:
        context = call_context(now=clock.now(), args=args, task="t-1")
        return request_digest(DecisionRequest(EntityRef("Agent", "a"), "tool:db/query",
                                              EntityRef("Tool", "db/query"), context))

    assert digest({"sql": "select 1", "password": "hunter2"}) == digest(
        {"sql": "select 1", "password": "correct horse"})
    assert digest({"sql": "select 1"}) != digest({"sql": "select 2"})


def test_the_request_digest_is_the_sha256_of_the_masked_requests_sorted_compact_json(
        clock: FrozenClock) -> None:
    # the digest's encoder is made once; its text must stay json.dumps's to the character
    import hashlib
    import json

    from proctor.audit.masking import mask
    from proctor.audit.recording import request_digest
    from proctor.policy import DecisionRequest, EntityRef, call_context

    args = {"zeta": [1, 2.5, -0.0, 1e300, True, None], "émoji": "caf\u00e9 \u2603 \U0001f600",
            "nested": {"b": {"y": 1, "x": "\n\t\""}, "a": []}, "when": "2026-12-07"}
    context = {**call_context(now=clock.now(), args=args, task="t-1"),
               "at": clock.now(), "purpose": "fix the build"}
    request = DecisionRequest(EntityRef("Agent", "a"), "tool:db/query",
                              EntityRef("Tool", "db/query"), context)
    masked = {k: v if k in ("task", "time", "at") else mask(v) for k, v in context.items()}
    text = json.dumps({"principal": {"type": "Agent", "id": "a"}, "action": "tool:db/query",
                       "resource": {"type": "Tool", "id": "db/query"}, "context": masked},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert "\u2603" in text and "\\u2603" not in text  # not escaped: ensure_ascii is off
    assert request_digest(request) == hashlib.sha256(text.encode("utf-8")).hexdigest()
