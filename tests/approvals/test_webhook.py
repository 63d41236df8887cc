"""The signed webhook, sent to a real HTTP receiver when an approval request is created."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.approvals import WebhookConfig, WebhookNotifier, load_webhook_config
from proctor.config import Settings
from proctor.errors import ConfigError
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from tests.enforcement.conftest import OWNER, SUPPORT, Agents, refund
from tests.identity.factories import manifest, public_jwk

from .receiver import Received, receiver

SECRET = b"webhook-secret-for-tests-0123456789"
EMAIL = [{"tool": "email/send_email"}]
REFUND = [{"tool": "crm/issue_refund"}]


def verify(secret: bytes, delivery: Received) -> dict[str, object]:
    """What a receiver does (docs/approvals.md): recompute, compare in constant time."""
    timestamp = delivery.headers["proctor-webhook-timestamp"]
    expected = hmac.new(secret, timestamp.encode() + b"." + delivery.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers["proctor-webhook-signature"], f"v1={expected}")
    body: dict[str, object] = json.loads(delivery.body)
    return body


def notifier(url: str, runtime: Runtime, *, max_attempts: int = 4) -> WebhookNotifier:
    config = WebhookConfig(url=url, secret=SECRET, backoff_seconds=0.01,
                           console_url="https://proctor.acme.example",
                           max_attempts=max_attempts)
    return WebhookNotifier(config, runtime.clock)


def test_a_new_request_is_announced_once_signed_and_masked(
    runtime: Runtime, agents: Agents,
) -> None:
    with receiver() as hook:
        sender = notifier(hook.url, runtime)
        runtime.approvals.subscribe(sender.notify)
        grant = agents.grant(SUPPORT, EMAIL)
        args = {"to": "ana@partner.example", "subject": "Refund",
                "body": "use key sk-live-abcdefghijklmnopqrstuvwxyz0123"}
        first = agents.call(grant, "email/send_email", args)
        agents.call(grant, "email/send_email", args)  # the same request: no second hook
        sender.close(timeout=5)
    assert first.approval is not None
    [delivery] = hook.received
    body = verify(SECRET, delivery)
    assert body["type"] == "approval.requested"
    shown = body["approval"]
    assert isinstance(shown, dict)
    assert (shown["id"], shown["agent"], shown["tool"]) == (
        first.approval.id, SUPPORT, "email/send_email")
    assert shown["reasons"] == [
        "email to an address outside acme.example needs a human's approval"]
    assert body["links"] == {
        "console": f"https://proctor.acme.example/console/approvals/{first.approval.id}"}
    assert b"sk-live-abcdefghijklmnopqrstuvwxyz0123" not in delivery.body
    assert grant.token.encode() not in delivery.body
    assert SECRET not in delivery.body
    assert sender.delivered == 1


def test_a_failing_receiver_is_retried_a_bounded_number_of_times(
    runtime: Runtime, agents: Agents,
) -> None:
    with receiver([503, 502]) as hook:
        sender = notifier(hook.url, runtime, max_attempts=3)
        runtime.approvals.subscribe(sender.notify)
        agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund", refund(25_000))
        sender.close(timeout=5)
    assert len(hook.received) == 3
    ids = {d.headers["proctor-webhook-id"] for d in hook.received}
    assert len(ids) == 1  # one delivery, retried
    for delivery in hook.received:
        verify(SECRET, delivery)
    assert (sender.delivered, sender.failed) == (1, 0)

    with receiver([500] * 10) as down:
        sender = notifier(down.url, runtime, max_attempts=2)
        sender.notify(runtime.approvals.list()[0])
        sender.close(timeout=5)
    assert len(down.received) == 2
    assert (sender.delivered, sender.failed) == (0, 1)


def test_a_refusing_receiver_is_not_retried(runtime: Runtime, agents: Agents) -> None:
    agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund", refund(25_000))
    with receiver([401]) as hook:
        sender = notifier(hook.url, runtime, max_attempts=4)
        sender.notify(runtime.approvals.list()[0])
        sender.close(timeout=5)
    assert len(hook.received) == 1
    assert sender.failed == 1


def test_a_wrong_secret_does_not_verify(runtime: Runtime, agents: Agents) -> None:
    with receiver() as hook:
        sender = notifier(hook.url, runtime)
        runtime.approvals.subscribe(sender.notify)
        agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund", refund(25_000))
        sender.close(timeout=5)
    with pytest.raises(AssertionError):
        verify(b"another-secret-0123456789abcdef", hook.received[0])


def test_the_config_takes_its_secret_from_a_file_or_the_environment(tmp_path: Path) -> None:
    assert load_webhook_config(tmp_path, env={}) is None
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "webhook.secret").write_bytes(SECRET + b"\n")
    (tmp_path / "webhook.toml").write_text(
        'url = "https://chat.acme.example/hook"\nsecret_file = "keys/webhook.secret"\n'
        "max_attempts = 3\n")
    config = load_webhook_config(tmp_path, env={})
    assert config is not None
    assert (config.secret, config.max_attempts) == (SECRET, 3)
    assert SECRET.decode() not in repr(config)
    from_env = load_webhook_config(tmp_path, env={"PROCTOR_WEBHOOK_SECRET": "e" * 32})
    assert from_env is not None and from_env.secret == b"e" * 32


@pytest.mark.parametrize(("text", "message"), [
    ('url = "https://x.example"\n', "secret_file"),
    ('url = "https://x.example"\nsecret_file = "nope"\n', "cannot be read"),
    ('url = "ftp://x.example"\nsecret_file = "s"\n', r"not an http\(s\) URL"),
    ('url = "https://x.example"\nsecret = "inline"\n', "unknown key `secret`"),
    ('url = "https://x.example"\nsecret_file = "short"\n', "at least 16 bytes"),
])
def test_a_bad_config_is_refused_with_its_reason(tmp_path: Path, text: str,
                                                  message: str) -> None:
    (tmp_path / "s").write_text(SECRET.decode())
    (tmp_path / "short").write_text("tiny")
    (tmp_path / "webhook.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_webhook_config(tmp_path, env={})


def test_a_home_with_a_webhook_announces_its_requests(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("PROCTOR_WEBHOOK_CONFIG", "PROCTOR_WEBHOOK_SECRET"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, policy_dir=home / "policies",
                        trust_domain="acme.example")
    init_home(settings)
    (home / "webhook.secret").write_bytes(SECRET)
    with receiver() as hook:
        (home / "webhook.toml").write_text(
            f'url = "{hook.url}"\nsecret_file = "webhook.secret"\nmax_attempts = 2\n')
        runtime = open_runtime(settings)
        try:
            key = ECKey.generate_key("P-256", private=True)
            runtime.registry.register(SUPPORT, owner=OWNER, groups=["support-agents"],
                                      proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
            runtime.enforcer.refresh_principals()
            private = key.private_key
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            agents = Agents(runtime, {SUPPORT: private})
            held = agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund", refund(25_000))
        finally:
            runtime.close()  # delivers what is queued
    assert held.approval is not None
    [delivery] = hook.received
    approval = verify(SECRET, delivery)["approval"]
    assert isinstance(approval, dict) and approval["id"] == held.approval.id
