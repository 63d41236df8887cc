"""The signed webhook, sent to a real HTTP receiver when an approval request is created: at
least once and in order, from the audit log and a cursor in the database."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from proctor.approvals import (
    REQUESTED_ACTION,
    WebhookConfig,
    WebhookDelivery,
    load_webhook_config,
)
from proctor.approvals.webhook import STREAM_NAME
from proctor.audit import EventFilter, iter_events, read_cursor
from proctor.config import Settings
from proctor.errors import ConfigError
from proctor.identity import OwnKeyProof
from proctor.runtime import Runtime, init_home, open_runtime
from tests.enforcement.conftest import OWNER, SUPPORT, Agents, refund
from tests.identity.factories import manifest, public_jwk

from .receiver import Received, receiver, wait_until

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


# the first retry's wait (0.5 s in a serving process): the retries are the same, sooner
FIRST_RETRY_SECONDS = 0.05


@contextmanager
def delivering(url: str, runtime: Runtime) -> Iterator[WebhookDelivery]:
    """The webhook's delivery, as a serving process runs it (stopped on exit): a request
    made here wakes it (``Runtime.deliver_webhooks``), not its next poll."""
    config = WebhookConfig(url=url, secret=SECRET, console_url="https://proctor.acme.example",
                           max_backoff_seconds=1)
    delivery = WebhookDelivery(config, runtime.store, runtime.approvals, runtime.clock,
                               first_retry_seconds=FIRST_RETRY_SECONDS)
    runtime.approvals.subscribe(delivery.notify)
    delivery.start()
    try:
        yield delivery
    finally:
        delivery.close()


def announced(deliveries: list[Received]) -> list[str]:
    """The approval ids the deliveries announced, each verified, in arrival order."""
    ids = []
    for delivery in deliveries:
        approval = verify(SECRET, delivery)["approval"]
        assert isinstance(approval, dict)
        assert delivery.headers["proctor-webhook-id"] == "whd_" + approval["id"][4:]
        ids.append(str(approval["id"]))
    return ids


def held(agents: Agents, amount_cents: int) -> str:
    """A call held for a human (refunds over 50.00); its approval's id."""
    verdict = agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund",
                          refund(amount_cents))
    assert verdict.approval is not None
    return verdict.approval.id


def test_a_new_request_is_announced_once_signed_and_masked(
    runtime: Runtime, agents: Agents,
) -> None:
    with receiver() as hook, delivering(hook.url, runtime) as delivery:
        grant = agents.grant(SUPPORT, EMAIL)
        args = {"to": "ana@partner.example", "subject": "Refund",
                "body": "use key sk-live-abcdefghijklmnopqrstuvwxyz0123"}
        first = agents.call(grant, "email/send_email", args)
        agents.call(grant, "email/send_email", args)  # the same request: no second hook
        later = held(agents, 25_000)
        # deliveries keep the requests' order: once the later one came, the repeat
        # would have come before it
        hook.wait_for(2)
    assert first.approval is not None
    assert announced(hook.received) == [first.approval.id, later]
    delivery_ = hook.received[0]
    body = verify(SECRET, delivery_)
    assert body["type"] == "approval.requested"
    shown = body["approval"]
    assert isinstance(shown, dict)
    assert (shown["id"], shown["agent"], shown["tool"]) == (
        first.approval.id, SUPPORT, "email/send_email")
    assert shown["reasons"] == [
        "email to an address outside acme.example needs a human's approval"]
    assert body["links"] == {
        "console": f"https://proctor.acme.example/console/approvals/{first.approval.id}"}
    assert b"sk-live-abcdefghijklmnopqrstuvwxyz0123" not in delivery_.body
    assert grant.token.encode() not in delivery_.body
    assert SECRET not in delivery_.body
    assert delivery.sink.delivered == 2


def test_a_request_and_its_audit_event_are_written_together(
    runtime: Runtime, agents: Agents,
) -> None:
    approval_id = held(agents, 25_000)
    held_again = agents.call(agents.grant(SUPPORT, REFUND), "crm/issue_refund",
                             refund(25_000))  # another grant: another request
    assert held_again.approval is not None
    events = list(iter_events(runtime.store, EventFilter(action=REQUESTED_ACTION)))
    assert [e.event["detail"]["approval"] for e in events] == [
        approval_id, held_again.approval.id]
    assert events[0].event["actor"]["type"] == "system"
    assert events[0].event["outcome"] == "pending"


def test_a_failing_receiver_is_retried_until_it_acknowledges(
    runtime: Runtime, agents: Agents,
) -> None:
    with receiver([503, 502, 429]) as hook, delivering(hook.url, runtime) as delivery:
        approval_id = held(agents, 25_000)
        hook.wait_for(4)
    assert announced(hook.received) == [approval_id] * 4  # one delivery id, retried
    assert (delivery.sink.delivered, delivery.sink.failed) == (1, 0)
    assert delivery.stream.failures == 3
    assert read_cursor(runtime.store, STREAM_NAME) == delivery.stream.cursor() > 0


def test_a_refusing_receiver_is_not_retried_and_holds_nothing_up(
    runtime: Runtime, agents: Agents,
) -> None:
    with receiver([401]) as hook, delivering(hook.url, runtime) as delivery:
        refused = held(agents, 25_000)
        after = held(agents, 26_000)
        hook.wait_for(2)
    assert announced(hook.received) == [refused, after]
    assert (delivery.sink.delivered, delivery.sink.failed) == (1, 1)


def test_requests_made_while_the_receiver_and_the_delivery_were_down_all_arrive_in_order(
    runtime: Runtime, agents: Agents,
) -> None:
    with receiver() as gone:
        url = gone.url  # a port nothing listens on once this receiver is closed
    port = int(url.split(":")[2].split("/")[0])
    with delivering(url, runtime) as down:
        first, second = held(agents, 25_000), held(agents, 26_000)
        # the delivery tried and failed (connection refused): then the process stops
        wait_until(lambda: down.stream.failures >= 1)
    third = held(agents, 27_000)  # no delivery runs in any process
    assert read_cursor(runtime.store, STREAM_NAME) is not None
    with receiver(port=port) as hook, delivering(hook.url, runtime) as delivery:
        hook.wait_for(3)
        fourth = held(agents, 28_000)
        hook.wait_for(4)
    assert announced(hook.received) == [first, second, third, fourth]
    assert delivery.sink.delivered == 4


def test_only_one_process_delivers_at_a_time(runtime: Runtime, agents: Agents) -> None:
    with receiver() as hook, delivering(hook.url, runtime) as one, \
            delivering(hook.url, runtime) as other:
        ids = [held(agents, 25_000 + n) for n in range(3)]
        hook.wait_for(3)
    assert announced(hook.received) == ids
    assert sorted([one.sink.delivered, other.sink.delivered]) == [0, 3]


def test_a_wrong_secret_does_not_verify(runtime: Runtime, agents: Agents) -> None:
    with receiver() as hook, delivering(hook.url, runtime):
        held(agents, 25_000)
        hook.wait_for(1)
    with pytest.raises(AssertionError):
        verify(b"another-secret-0123456789abcdef", hook.received[0])


def test_the_config_takes_its_secret_from_a_file_or_the_environment(tmp_path: Path) -> None:
    assert load_webhook_config(tmp_path, env={}) is None
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "webhook.secret").write_bytes(SECRET + b"\n")
    (tmp_path / "webhook.toml").write_text(
        'url = "https://chat.acme.example/hook"\nsecret_file = "keys/webhook.secret"\n'
        "max_attempts = 3\nmax_backoff_seconds = 10\n")  # max_attempts: accepted, unused
    config = load_webhook_config(tmp_path, env={})
    assert config is not None
    assert (config.secret, config.max_backoff_seconds, config.lease_seconds) == (SECRET, 10, 10)
    with (tmp_path / "webhook.toml").open("a") as more:
        more.write("timeout_seconds = 1\nlease_seconds = 2.5\n")
    shorter = load_webhook_config(tmp_path, env={})
    assert shorter is not None and (shorter.timeout_seconds, shorter.lease_seconds) == (1, 2.5)
    assert SECRET.decode() not in repr(config)
    from_env = load_webhook_config(tmp_path, env={"PROCTOR_WEBHOOK_SECRET": "e" * 32})
    assert from_env is not None and from_env.secret == b"e" * 32


@pytest.mark.parametrize(("text", "message"), [
    ('url = "https://x.example"\n', "secret_file"),
    ('url = "https://x.example"\nsecret_file = "nope"\n', "cannot be read"),
    ('url = "ftp://x.example"\nsecret_file = "s"\n', r"not an http\(s\) URL"),
    ('url = "https://x.example"\nsecret = "inline"\n', "unknown key `secret`"),
    ('url = "https://x.example"\nsecret_file = "short"\n', "at least 16 bytes"),
    # a delivery in flight (up to timeout_seconds) must end before its lease can lapse
    ('url = "https://x.example"\nsecret_file = "s"\nlease_seconds = 9\n',
     "lease_seconds is at least twice timeout_seconds"),
    ('url = "https://x.example"\nsecret_file = "s"\nlease_seconds = 601\n',
     "at most 600"),
    ('url = "https://x.example"\nsecret_file = "s"\nlease_seconds = "ten"\n',
     "`lease_seconds` must be a number"),
    # a number is a TOML number: a boolean or a string was read as one (true as 1 s)
    ('url = "https://x.example"\nsecret_file = "s"\ntimeout_seconds = true\n',
     "`timeout_seconds` must be a number"),
    ('url = "https://x.example"\nsecret_file = "s"\nlease_seconds = "30"\n',
     "`lease_seconds` must be a number"),
    ('url = "https://x.example"\nsecret_file = "s"\nmax_backoff_seconds = "nan"\n',
     "`max_backoff_seconds` must be a number"),
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
            f'url = "{hook.url}"\nsecret_file = "webhook.secret"\n')
        runtime = open_runtime(settings)
        runtime.deliver_webhooks()
        try:
            key = ECKey.generate_key("P-256", private=True)
            runtime.registry.register(SUPPORT, owner=OWNER, groups=["support-agents"],
                                      proof=OwnKeyProof(public_jwk(key)), manifest=manifest())
            runtime.enforcer.refresh_principals()
            private = key.private_key
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            agents = Agents(runtime, {SUPPORT: private})
            approval_id = held(agents, 25_000)
            hook.wait_for(1)
        finally:
            runtime.close()
    assert announced(hook.received) == [approval_id]
