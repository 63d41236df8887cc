"""A signed outbound webhook, sent when an approval request is created, at least once.

For chat or paging tools: the body says who asks for what and why, with the
arguments as the approver sees them (masked) — never a token, a secret or a
raw argument. Configured in ``$PROCTOR_HOME/webhook.toml`` (or the file named by
``$PROCTOR_WEBHOOK_CONFIG``)::

    url = "https://chat.acme.example/hooks/proctor"
    secret_file = "keys/webhook.secret"     # relative to the home; or set
                                            # PROCTOR_WEBHOOK_SECRET (it wins)
    console_url = "https://proctor.acme.example"   # links in the body (optional)
    timeout_seconds = 5
    max_backoff_seconds = 30                # retries wait 0.5 s, 1 s, 2 s, ... up to this
    lease_seconds = 10                      # how long a crashed deliverer holds up the others

Each delivery carries three headers::

    Proctor-Webhook-Id:         a delivery id, one per request (the same on every retry)
    Proctor-Webhook-Timestamp:  Unix seconds when this attempt was signed
    Proctor-Webhook-Signature:  v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body,
compares in constant time, and refuses timestamps more than five minutes
away (see ``docs/approvals.md``).

Delivery is the audit streaming's (``proctor.audit.streaming``): a new request and its
``approval.request`` audit event commit together (``ApprovalQueue.request``), and the
stream ``approval-webhook`` sends those events' webhooks in order from a cursor in the
database, retrying with backoff until the receiver acknowledges. The agent's call never
waits for it; a process that stops or crashes loses nothing (the next delivery resumes
from the cursor, so a receiver may see a request twice: it drops the repeat by its id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from proctor.approvals.queue import REQUESTED_ACTION, Approval, ApprovalQueue
from proctor.audit import AuditStream, EventFilter, StoredEvent
from proctor.clock import Clock
from proctor.documents import read_toml
from proctor.errors import ApprovalError, AuditDeliveryError, ConfigError, ProctorError
from proctor.files import read_capped
from proctor.store import Store

if TYPE_CHECKING:
    import httpx

__all__ = ["STREAM_NAME", "WebhookConfig", "WebhookDelivery", "WebhookSink", "load_webhook_config",
           "sign", "webhook_body"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Proctor-Webhook-Signature"
TIMESTAMP_HEADER = "Proctor-Webhook-Timestamp"
ID_HEADER = "Proctor-Webhook-Id"
_CONFIG_FILE = "webhook.toml"
# `max_attempts` bounded the retries before deliveries became durable: still accepted,
# no longer used (a delivery is retried until the receiver acknowledges it)
_KEYS = {"url", "secret_file", "console_url", "timeout_seconds", "max_backoff_seconds",
         "lease_seconds", "max_attempts"}
_MAX_SECRET_BYTES = 4096
# the audit stream (and its cursor) of the webhook's deliveries
STREAM_NAME = "approval-webhook"
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: bytes
    console_url: str = ""
    timeout_seconds: float = 5.0
    max_backoff_seconds: float = 30.0
    # one process delivers at a time, by a lease it renews while it runs; a process that
    # dies holds the others up until its lease lapses
    lease_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError(f"webhook url `{self.url[:200]}` is not an http(s) URL")
        if len(self.secret) < 16:
            raise ConfigError("the webhook secret must be at least 16 bytes")
        if not 0 < self.timeout_seconds <= 60 or not 1 <= self.max_backoff_seconds <= 300:
            raise ConfigError("webhook timeout_seconds is 0 to 60 and max_backoff_seconds "
                              "1 to 300")
        # the holder renews its lease once half of it is gone, before a delivery: a
        # delivery (at most timeout_seconds) must end before the lease can lapse
        if not 2 * self.timeout_seconds <= self.lease_seconds <= 600:
            raise ConfigError("webhook lease_seconds is at least twice timeout_seconds and "
                              "at most 600")

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookConfig(url={self.url!r})"


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
    for key in ("timeout_seconds", "max_backoff_seconds", "lease_seconds"):
        # a TOML number: float() read a boolean (true as 1 s) and a string ("30") as one
        if key in data and (not isinstance(data[key], int | float)
                            or isinstance(data[key], bool)):
            raise ConfigError(f"webhook config `{path}`: `{key}` must be a number of seconds")
    try:
        return WebhookConfig(
            url=data["url"], secret=secret, console_url=str(data.get("console_url", "")),
            timeout_seconds=float(data.get("timeout_seconds", 5.0)),
            max_backoff_seconds=float(data.get("max_backoff_seconds", 30.0)),
            lease_seconds=float(data.get("lease_seconds", 10.0)))
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


class WebhookSink:
    """Sends the webhook of each ``approval.request`` event it is given (an audit stream's
    sink): one signed POST per request, the body read from the approval queue.

    A 2xx is the acknowledgement; a retryable answer (408, 425, 429, 5xx) or no answer
    raises :class:`AuditDeliveryError`, so the stream sends it again later; any other
    answer is a refusal that sending again would not change: logged (without the body),
    counted in ``failed``, and passed over.
    """

    def __init__(self, config: WebhookConfig, approvals: ApprovalQueue, clock: Clock, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        import httpx  # here: its import costs about 0.15 s of CPU, paid only by a webhook

        self.config = config
        self._approvals = approvals
        self._clock = clock
        self._client = httpx.Client(timeout=config.timeout_seconds, follow_redirects=False,
                                    transport=transport)
        parts = urlsplit(config.url)
        self.description = f"webhook {parts.scheme}://{parts.hostname}"
        self.delivered = 0
        self.failed = 0

    def send(self, events: Sequence[StoredEvent]) -> None:
        for stored in events:
            detail = stored.event.get("detail") or {}
            try:
                approval = self._approvals.get(str(detail.get("approval", "")))
            except ApprovalError:
                log.error("approval event %d names no approval: not announced", stored.seq)
                continue
            self._post(approval)

    def _post(self, approval: Approval) -> None:
        import httpx

        body = json.dumps(webhook_body(approval, self.config.console_url), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()
        # one id per request, whichever process sends it and however often
        delivery_id = "whd_" + approval.id.removeprefix("apr_")
        timestamp = int(self._clock.now().timestamp())
        headers = {"Content-Type": "application/json", ID_HEADER: delivery_id,
                   TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: sign(self.config.secret, timestamp, body),
                   "User-Agent": "proctor-webhook"}
        try:
            response = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise AuditDeliveryError(f"{self.description}: {type(exc).__name__}") from None
        if response.status_code < 300:
            self.delivered += 1
            return
        if response.status_code in _RETRY_STATUSES:
            raise AuditDeliveryError(f"{self.description} answered {response.status_code}")
        self.failed += 1
        log.error("webhook delivery %s refused with HTTP %d: not sent again", delivery_id,
                  response.status_code)

    def close(self) -> None:
        self._client.close()


class WebhookDelivery:
    """The webhook's delivery in one process: the audit stream ``approval-webhook`` of the
    ``approval.request`` events to a :class:`WebhookSink`, on a background thread.

    The audit log is the queue and the stream's cursor is in the database, so a process
    that stops or crashes loses nothing: the next one to run the delivery (any process
    on the same database; one at a time, by the stream's lease of ``config.lease_seconds``)
    resumes after the last acknowledged request. A new request wakes the thread at once
    (:meth:`notify`, an :class:`~proctor.approvals.ApprovalQueue` listener); requests
    made by another process are found within ``poll_seconds``. A failed delivery is
    retried after ``first_retry_seconds``, then twice as long each time, up to
    ``config.max_backoff_seconds``.
    """

    def __init__(self, config: WebhookConfig, store: Store, approvals: ApprovalQueue,
                 clock: Clock, *, transport: httpx.BaseTransport | None = None,
                 poll_seconds: float = 1.0, first_retry_seconds: float = 0.5) -> None:
        self.sink = WebhookSink(config, approvals, clock, transport=transport)
        self.stream = AuditStream(
            store, self.sink, clock, name=STREAM_NAME,
            where=EventFilter(action=REQUESTED_ACTION), batch_size=1, start="end",
            poll_seconds=poll_seconds, max_backoff_seconds=config.max_backoff_seconds,
            first_backoff_seconds=first_retry_seconds, exclusive=True,
            lease_seconds=config.lease_seconds)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start delivering. The first delivery ever starts at the audit log's head, so
        a webhook configured today does not announce last year's requests."""
        self.stream.cursor()
        self._thread = threading.Thread(target=self.stream.run, args=(self._stop, self._wake),
                                        name="proctor-webhook", daemon=True)
        self._thread.start()

    def notify(self, approval: Approval) -> None:
        """A request was made in this process: look now, not at the next poll."""
        self._wake.set()

    def close(self, *, timeout: float = 5.0) -> None:
        """Stop (within ``timeout``); what is not yet acknowledged stays in the log for the
        next delivery to send."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.stream.release_lease()
        except ProctorError as exc:
            log.warning("webhook delivery's lease not released: %s", exc.message)
        self.sink.close()
