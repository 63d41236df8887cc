"""A signed outbound webhook, sent when an approval request is created.

For chat or paging tools: the body says who asks for what and why, with the
arguments as the approver sees them (masked) — never a token, a secret or a
raw argument. Configured in ``$PROCTOR_HOME/webhook.toml`` (or the file named by
``$PROCTOR_WEBHOOK_CONFIG``)::

    url = "https://chat.acme.example/hooks/proctor"
    secret_file = "keys/webhook.secret"     # relative to the home; or set
                                            # PROCTOR_WEBHOOK_SECRET (it wins)
    console_url = "https://proctor.acme.example"   # links in the body (optional)
    timeout_seconds = 5
    max_attempts = 4                        # 1 to 10; backoff 0.5 s, 1 s, 2 s, ...

Each delivery carries three headers::

    Proctor-Webhook-Id:         a delivery id (the same on every retry)
    Proctor-Webhook-Timestamp:  Unix seconds when this attempt was signed
    Proctor-Webhook-Signature:  v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body,
compares in constant time, and refuses timestamps more than five minutes
away (see ``docs/approvals.md``). Deliveries run on a background thread: the
agent's call never waits for them. A request that still fails after the last
attempt is logged (without the body) and dropped; the approval itself is in
the queue either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from proctor.approvals.queue import Approval
from proctor.clock import Clock
from proctor.documents import read_toml
from proctor.errors import ConfigError
from proctor.files import read_capped

__all__ = ["WebhookConfig", "WebhookNotifier", "load_webhook_config", "sign", "webhook_body"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Proctor-Webhook-Signature"
TIMESTAMP_HEADER = "Proctor-Webhook-Timestamp"
ID_HEADER = "Proctor-Webhook-Id"
_CONFIG_FILE = "webhook.toml"
_KEYS = {"url", "secret_file", "console_url", "timeout_seconds", "max_attempts"}
_MAX_SECRET_BYTES = 4096
_QUEUE_SIZE = 1000
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: bytes
    console_url: str = ""
    timeout_seconds: float = 5.0
    max_attempts: int = 4
    backoff_seconds: float = 0.5

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError(f"webhook url `{self.url[:200]}` is not an http(s) URL")
        if len(self.secret) < 16:
            raise ConfigError("the webhook secret must be at least 16 bytes")
        if not 1 <= self.max_attempts <= 10 or not 0 < self.timeout_seconds <= 60:
            raise ConfigError("webhook max_attempts is 1 to 10 and timeout_seconds 0 to 60")

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookConfig(url={self.url!r}, max_attempts={self.max_attempts})"


def load_webhook_config(home: Path, env: Mapping[str, str] | None = None
                        ) -> WebhookConfig | None:
    """The webhook of this home, or None when none is configured."""
    env = os.environ if env is None else env
    named = env.get("PROCTOR_WEBHOOK_CONFIG")
    path = Path(named) if named else home / _CONFIG_FILE
    if not path.is_file():
        if named:
            raise ConfigError(f"webhook config `{path}` does not exist")
        return None
    data = read_toml(path, what="webhook config", error=ConfigError)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"webhook config `{path}` has unknown key `{unknown[0]}`")
    if not isinstance(data.get("url"), str):
        raise ConfigError(f"webhook config `{path}` needs a `url`")
    secret = env.get("PROCTOR_WEBHOOK_SECRET", "").encode()
    if not secret:
        if not isinstance(data.get("secret_file"), str):
            raise ConfigError("the webhook needs `secret_file` or PROCTOR_WEBHOOK_SECRET")
        secret = read_capped(home / data["secret_file"], _MAX_SECRET_BYTES,
                             "webhook secret file", ConfigError).strip()
    try:
        return WebhookConfig(
            url=data["url"], secret=secret, console_url=str(data.get("console_url", "")),
            timeout_seconds=float(data.get("timeout_seconds", 5.0)),
            max_attempts=int(data.get("max_attempts", 4)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"webhook config `{path}` is not valid: {exc}") from exc


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def webhook_body(approval: Approval, console_url: str = "") -> dict[str, Any]:
    """What a receiver is told: the request as an approver sees it (masked)."""
    shown = approval.request
    body: dict[str, Any] = {
        "type": "approval.requested",
        "approval": {
            "id": approval.id, "agent": approval.agent_id, "task": approval.task_id,
            "tool": approval.tool_id, "on_behalf_of": approval.on_behalf_of,
            "grant": approval.accessor, "args": shown.get("args", {}),
            "reasons": shown.get("reasons", []), "policy_ids": shown.get("policy_ids", []),
            "purpose": shown.get("purpose", ""), "trust_state": shown.get("trust_state"),
            "risk_score": shown.get("risk_score"),
            "delegation_chain": shown.get("delegation_chain", []),
            "created_at": approval.created_at.isoformat(),
            "expires_at": approval.expires_at.isoformat(),
        },
    }
    if console_url:
        body["links"] = {"console": f"{console_url.rstrip('/')}/console/approvals/{approval.id}"}
    return body


class WebhookNotifier:
    """Delivers one signed POST per new approval request, on a background thread.

    Use it as an :class:`~proctor.approvals.ApprovalQueue` listener:
    ``queue.subscribe(notifier.notify)``; :meth:`close` waits (bounded) for what
    is queued.
    """

    def __init__(self, config: WebhookConfig, clock: Clock, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self._clock = clock
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(_QUEUE_SIZE)
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=config.timeout_seconds, follow_redirects=False,
                                    transport=transport)
        self._thread = threading.Thread(target=self._run, name="proctor-webhook",
                                        daemon=True)
        self._thread.start()
        self.delivered = 0
        self.failed = 0

    def notify(self, approval: Approval) -> None:
        """Queue the delivery for ``approval``; never blocks, never raises."""
        body = json.dumps(webhook_body(approval, self.config.console_url), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()
        try:
            self._queue.put_nowait((f"whd_{secrets.token_hex(12)}", body))
        except queue.Full:
            self.failed += 1
            log.error("webhook queue is full: approval %s not announced", approval.id)

    def close(self, *, timeout: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(1.0)
        self._client.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            self._deliver(*item)

    def _deliver(self, delivery_id: str, body: bytes) -> None:
        pause = self.config.backoff_seconds
        for attempt in range(1, self.config.max_attempts + 1):
            timestamp = int(self._clock.now().timestamp())
            headers = {"Content-Type": "application/json", ID_HEADER: delivery_id,
                       TIMESTAMP_HEADER: str(timestamp),
                       SIGNATURE_HEADER: sign(self.config.secret, timestamp, body),
                       "User-Agent": "proctor-webhook"}
            try:
                response = self._client.post(self.config.url, content=body, headers=headers)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                retry = response.status_code in _RETRY_STATUSES
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                retry, problem = True, type(exc).__name__
            if not retry or attempt == self.config.max_attempts:
                break
            if self._stop.wait(pause):
                break
            pause = min(pause * 2, 30.0)
        self.failed += 1
        log.error("webhook delivery %s failed after %d attempt(s): %s", delivery_id, attempt,
                  problem)
