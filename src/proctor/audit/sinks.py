"""Where an audit stream delivers: a syslog collector or an HTTP endpoint.

- :class:`SyslogSink` — RFC 5424 messages over TCP (RFC 6587 octet counting), TLS
  optional (RFC 5425). Each message is one OCSF event: ``<PRI>1 TIMESTAMP HOST proctor
  - MSGID [proctor@32473 seq="N"] {OCSF JSON}``, facility 13 (log audit), severity
  warning for a refusal or denial, informational otherwise. Syslog over TCP has no
  acknowledgement: before each batch the connection is checked for a close by the
  collector, and reopened; a collector that dies after reading part of a batch
  loses what it read but did not store (use HTTP where that matters).
- :class:`HttpSink` — one POST per batch, a 2xx is the acknowledgement. Two shapes:
  ``json`` (a JSON array of OCSF events, ``Authorization: Bearer <token>`` if a token
  is given) and ``splunk_hec`` (Splunk's HTTP Event Collector: one ``{"time", "host",
  "source", "sourcetype", "event"}`` object per event, ``Authorization: Splunk
  <token>``).

A sink raises :class:`AuditDeliveryError` for anything not acknowledged; it never logs an
event's body, a token or a URL's credentials.
"""

from __future__ import annotations

import json
import re
import select
import socket
import ssl
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from proctor.audit.events import StoredEvent
from proctor.audit.ocsf import to_ocsf
from proctor.errors import AuditDeliveryError

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpSink", "Sink", "SyslogSink", "sink_for", "syslog_frame"]

_FACILITY_LOG_AUDIT = 13
_WARNING, _INFO = 4, 6
_REFUSED = frozenset({"denied", "refused", "failed", "error", "pending_approval"})
_MSGID = re.compile(r"[^!-~]")
# RFC 5612's documentation enterprise number: proctor has no number of its own
_SD_ID = "proctor@32473"


class Sink(Protocol):
    description: str  # for logs: kind and host, never a token

    def send(self, events: Sequence[StoredEvent]) -> None: ...

    def close(self) -> None: ...


def _ocsf(stored: StoredEvent, product_version: str) -> dict[str, Any]:
    return to_ocsf(stored.seq, stored.hash, stored.prev_hash, stored.event,
                   product_version=product_version)


def syslog_frame(stored: StoredEvent, *, hostname: str, product_version: str = "") -> bytes:
    """One RFC 5424 message carrying ``stored`` as OCSF, framed by its octet count."""
    event = stored.event
    severity = _WARNING if event.get("outcome") in _REFUSED else _INFO
    msgid = _MSGID.sub("_", str(event.get("action") or "-"))[:32] or "-"
    timestamp = str(event.get("time") or "-")
    body = json.dumps(_ocsf(stored, product_version), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    message = (f"<{_FACILITY_LOG_AUDIT * 8 + severity}>1 {timestamp} {hostname} proctor - "
               f"{msgid} [{_SD_ID} seq=\"{stored.seq}\"] {body}").encode()
    return f"{len(message)} ".encode() + message


class SyslogSink:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 hostname: str | None = None, timeout_seconds: float = 5.0,
                 product_version: str = "") -> None:
        self.host, self.port, self.tls = host, port, tls
        self.hostname = _MSGID.sub("_", hostname or socket.gethostname())[:255] or "-"
        self.timeout_seconds = timeout_seconds
        self.product_version = product_version
        self.description = f"syslog{'+tls' if tls else ''}://{host}:{port}"
        self._socket: socket.socket | None = None

    def send(self, events: Sequence[StoredEvent]) -> None:
        frames = b"".join(syslog_frame(e, hostname=self.hostname,
                                       product_version=self.product_version) for e in events)
        try:
            connection = self._connection()
            connection.sendall(frames)
        except OSError as exc:
            self.close()
            raise AuditDeliveryError(f"{self.description}: {type(exc).__name__}") from None

    def _connection(self) -> socket.socket:
        if self._socket is not None and not self._closed_by_peer(self._socket):
            return self._socket
        self.close()
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout_seconds)
        self._socket = (self.tls.wrap_socket(raw, server_hostname=self.host)
                        if self.tls is not None else raw)
        return self._socket

    @staticmethod
    def _closed_by_peer(connection: socket.socket) -> bool:
        """A collector sends nothing: anything readable is its close (or a reset)."""
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


class HttpSink:
    def __init__(self, url: str, *, shape: Literal["json", "splunk_hec"] = "json",
                 token: str | None = None, timeout_seconds: float = 10.0,
                 hostname: str | None = None, product_version: str = "",
                 client: httpx.Client | None = None) -> None:
        import httpx  # here: its import costs about 0.15 s of CPU, paid only by a sink

        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"`{parts.scheme}://…` is not an http(s) URL")
        if shape not in {"json", "splunk_hec"}:
            raise ValueError(f"shape `{shape}` is not json or splunk_hec")
        self.url, self.shape, self._token = url, shape, token
        self.hostname = hostname or socket.gethostname()
        self.product_version = product_version
        self.description = f"{shape} {parts.scheme}://{parts.hostname}"
        self._client = client or httpx.Client(timeout=timeout_seconds)

    def send(self, events: Sequence[StoredEvent]) -> None:
        import httpx

        headers = {"Content-Type": "application/json"}
        if self.shape == "splunk_hec":
            body = "\n".join(json.dumps({
                "time": _epoch(e.event.get("time")), "host": self.hostname,
                "source": "proctor", "sourcetype": "ocsf:api_activity",
                "event": _ocsf(e, self.product_version)}, separators=(",", ":"))
                for e in events)
            if self._token:
                headers["Authorization"] = f"Splunk {self._token}"
        else:
            body = json.dumps([_ocsf(e, self.product_version) for e in events],
                              separators=(",", ":"))
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._client.post(self.url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise AuditDeliveryError(f"{self.description}: {type(exc).__name__}") from None
        if not response.is_success:
            raise AuditDeliveryError(f"{self.description} answered {response.status_code}")

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:  # never the token
        return f"HttpSink({self.description!r})"


def _epoch(time: object) -> float:
    try:
        return datetime.fromisoformat(str(time)).timestamp()
    except ValueError:
        return 0.0


def sink_for(target: str, *, shape: Literal["json", "splunk_hec"] = "json",
             token: str | None = None, ca_file: str | None = None,
             product_version: str = "") -> Sink:
    """The sink a target names: ``syslog://host[:514]`` (TCP), ``syslog+tls://host[:6514]``
    (``ca_file`` to trust a private CA), or an ``http(s)://`` URL (``shape``, ``token``)."""
    parts = urlsplit(target)
    if parts.scheme in {"syslog", "syslog+tls"}:
        if not parts.hostname:
            raise ValueError(f"`{parts.scheme}://` needs a host")
        tls = None
        if parts.scheme == "syslog+tls":
            tls = ssl.create_default_context(cafile=ca_file)
        default_port = 6514 if tls else 514
        return SyslogSink(parts.hostname, parts.port or default_port, tls=tls,
                          product_version=product_version)
    if parts.scheme in {"http", "https"}:
        return HttpSink(target, shape=shape, token=token, product_version=product_version)
    raise ValueError(f"an audit stream goes to syslog://, syslog+tls://, http:// or "
                     f"https://, not `{parts.scheme or target[:20]}`")
