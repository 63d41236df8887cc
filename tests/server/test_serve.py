"""``proctor serve`` as a real process on a free port: the embedded default (SQLite, the
admin token printed once), and two workers on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from proctor.cli.main import app
from tests.cli.audited import account

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 180  # a bound, not a wait: generous, for a shared machine
# uvicorn shuts down gracefully on SIGTERM, then re-raises it
STOPPED = (0, -signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Served:
    """A ``proctor serve`` child process and the lines it prints."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proctor.cli", "serve", "--port", str(self.port), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line_after(self, marker: str) -> str:
        """The line printed after the first one containing ``marker``."""
        deadline = time.monotonic() + STARTUP_SECONDS
        seen = False
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if seen:
                return line
            seen = marker in line
        raise AssertionError(f"`{marker}` was not printed within {STARTUP_SECONDS} s")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        # one client for every look: httpx.get() builds a TLS context each time, 36 ms of
        # CPU taken from the starting server five times a second
        with httpx.Client(timeout=2) as probe:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, "proctor serve exited"
                try:
                    if probe.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"proctor serve was not ready within {STARTUP_SECONDS} s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise
        finally:
            self._reader.join(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROCTOR_")}
    return {**clean, "PROCTOR_HOME": str(tmp_path / "home"),
            "PROCTOR_TRUST_DOMAIN": "acme.example"}


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[Served]:
    server = Served(env)
    yield server
    server.stop()


def test_the_embedded_default_serves_with_the_admin_token_it_printed_once(
        served: Served, env: dict[str, str]) -> None:
    token = served.line_after("admin token for local-admin")
    assert token.startswith("ptk_")
    served.wait_ready()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=served.url, timeout=10) as client:  # one TLS context
        me = client.get("/v1/whoami", headers=headers)
        assert me.json()["roles"] == ["admin"]
        anonymous = client.get("/v1/agents")
        assert (anonymous.status_code, anonymous.json()["code"]) == (
            401, "credentials_missing")
        jwks = client.get("/.well-known/jwks.json").json()
        assert [k["alg"] for k in jwks["keys"]] == ["ES256"]
        openapi = client.get("/openapi.json").json()
        assert "/v1/decide" in openapi["paths"]
        made = client.get("/v1/audit/events", headers=headers,
                          params={"actor_type": "human", "action": "token.create"}).json()
    assert [(e["event"]["actor"]["id"], e["event"]["detail"]["os_user"],
             e["event"]["detail"]["human"]) for e in made["events"]] == [
        (account(), account(), "local-admin")]  # the login name: no --by, no PROCTOR_OPERATOR
    assert served.stop() in STOPPED

    again = Served(env)
    try:
        again.wait_ready()
        assert httpx.get(f"{again.url}/v1/whoami", headers=headers, timeout=10
                         ).status_code == 200
    finally:
        assert again.stop() in STOPPED
    assert "admin token" not in "\n".join(list(again.lines.queue))


def _refused(env: dict[str, str], *args: str) -> Result:
    """``proctor serve`` refusing before it starts, run in this process (what it prints is
    the subject; the tests above start real processes)."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PROCTOR_")}
    return CliRunner().invoke(app, ["serve", *args], env={**unset, **env})


def test_the_embedded_default_refuses_several_workers(env: dict[str, str]) -> None:
    completed = _refused(env, "--workers", "2")
    assert completed.exit_code == 1
    assert completed.stderr.startswith("error: the embedded default (SQLite) runs one process")


@pytest.mark.postgres
def test_serve_refuses_to_listen_on_every_address_without_public_url(
        env: dict[str, str]) -> None:
    completed = _refused(env, "--host", "0.0.0.0", "--port", str(free_port()))  # noqa: S104
    assert completed.exit_code == 1
    assert completed.stderr.startswith("error: `proctor serve` listens on `0.0.0.0`, not "
                                       "loopback, so it needs `public_url` in server.toml")
    assert completed.stderr.count("\n") == 1


def test_two_workers_on_postgresql_share_one_state_each_on_a_socket_of_its_own(
        postgres_url: str, env: dict[str, str]) -> None:
    env = {**env, "PROCTOR_DATABASE_URL": postgres_url}
    # the refusals and the init in this process (a process each would only add its start);
    # the workers are real processes
    refused = _refused(env)
    assert refused.exit_code == 1
    assert "run `proctor init` first" in refused.stderr
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PROCTOR_")}
    init = CliRunner().invoke(app, ["init", "--json"], env={**unset, **env})
    assert init.exit_code == 0, init.output
    token = json.loads(init.stdout)["admin_token"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        in_use = taken.getsockname()[1]
        busy = _refused(env, "--workers", "2", "--port", str(in_use))
    assert busy.exit_code == 1
    assert busy.stderr.splitlines()[-1] == (
        f"error: cannot listen on `127.0.0.1:{in_use}`: Address already in use")
    server = Served(env, "--workers", "2")
    try:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            for _ in range(20):  # new connections: the workers share them out
                assert client.get("/v1/whoami", headers={"Connection": "close"}
                                  ).status_code == 200
            metrics = client.get("/metrics").text
        line = next(m for m in metrics.splitlines()
                    if m.startswith('proctor_http_requests_total{method="GET",'
                                    'route="/v1/whoami",status="200"}'))
        assert float(line.rsplit(" ", 1)[1]) == 20.0  # counted across both processes
        # each worker listens on a socket of its own (once started: the first to start
        # answered the above), and the kernel shares connections opened together among
        # them (all 24 to one worker: odds 2^-23)
        workers = _both_listening(server.port)
        assert set(workers) == set(_answered_by(server.port, 24))
        # a worker killed is started again by the supervisor, on a socket of its own
        os.kill(workers[0], signal.SIGKILL)
        again = _both_listening(server.port, not_by=workers[0])
        assert workers[1] in again
        assert set(again) == set(_answered_by(server.port, 24))
    finally:
        assert server.stop() in STOPPED


def _tcp_sockets() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of this machine's IPv4 TCP sockets."""
    found = []
    for line in Path("/proc/net/tcp").read_text("ascii").splitlines()[1:]:
        fields = line.split()
        found.append((int(fields[1].rsplit(":", 1)[1], 16),
                      int(fields[2].rsplit(":", 1)[1], 16), fields[3], int(fields[9])))
    return found


def _owners(inodes: set[int]) -> dict[int, int]:
    """The process holding each of ``inodes`` (sockets), by inode."""
    owners = {}
    with os.scandir("/proc") as processes:
        pids = [int(entry.name) for entry in processes if entry.name.isdigit()]
    for pid in pids:
        try:
            with os.scandir(f"/proc/{pid}/fd") as fds:
                paths = [Path(fd.path) for fd in fds]
        except OSError:  # gone, or not ours to read
            continue
        for path in paths:
            with contextlib.suppress(OSError):  # closed meanwhile
                link = str(path.readlink())
                if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                    owners[int(link[8:-1])] = pid
    return owners


def _listening(port: int) -> dict[int, int]:
    """The listening sockets on ``port``: their processes, by inode."""
    return _owners({inode for local, _, state, inode in _tcp_sockets()
                    if local == port and state == "0A"})


def _both_listening(port: int, *, not_by: int | None = None) -> list[int]:
    """The two processes listening on ``port`` (neither of them ``not_by``), once they
    are (waited for up to :data:`STARTUP_SECONDS`)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        found = sorted(set(_listening(port).values()))
        if len(found) == 2 and not_by not in found:
            return found
        assert time.monotonic() < deadline, f"listening on the port: {found}"
        time.sleep(0.1)


def _answered_by(port: int, count: int) -> list[int]:
    """``count`` connections opened together, each asked ``GET /healthz``: the process
    that holds each one's server side."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    try:
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for client in clients:  # answered: the server side is accepted, and held open
            assert client.recv(12) == b"HTTP/1.1 200"
        mine = {client.getsockname()[1] for client in clients}
        sides = {inode for local, remote, state, inode in _tcp_sockets()
                 if local == port and remote in mine and state == "01"}
        owners = _owners(sides)
        assert len(owners) == count
        return list(owners.values())
    finally:
        for client in clients:
            client.close()


def test_serve_streams_the_audit_log_in_the_background(env: dict[str, str]) -> None:
    from tests.audit.receivers import HttpReceiver, Received
    from tests.audit.receivers import free_port as collector_port

    received, port = Received(), collector_port()
    receiver = HttpReceiver(port, received).start()
    server = Served(env, "--audit-stream", f"http://127.0.0.1:{port}/ingest")
    try:
        server.wait_ready()
        # the first open's policy.activate, then the admin token's token.create
        received.wait_for(2, timeout=STARTUP_SECONDS)
    finally:
        assert server.stop() in STOPPED
        receiver.stop()
    sent = [event["api"]["operation"] for body in received.bodies for event in body]
    assert sent[:2] == ["policy.activate", "token.create"]


def _signed_in_from(url: str, token: str, forwarded_for: str) -> None:
    """Sign in to the console with ``token``, the request saying ``X-Forwarded-For``."""
    from tests.console.conftest import csrf_of

    with httpx.Client(base_url=url, timeout=10) as client:
        form = client.get("/console/login")
        answer = client.post("/console/login", headers={"X-Forwarded-For": forwarded_for},
                             data={"token": token, "csrf": csrf_of(form.text)})
        assert answer.status_code == 303, answer.text


def _login_sources(url: str, token: str) -> list[str | None]:
    events = httpx.get(f"{url}/v1/audit/events", timeout=10,
                       headers={"Authorization": f"Bearer {token}"},
                       params={"action": "console.login"}).json()["events"]
    return [e["event"]["source"] for e in events]


def test_the_client_address_is_the_peers_unless_a_trusted_proxy_names_another(
        served: Served, env: dict[str, str]) -> None:
    """Any client can send X-Forwarded-For: uvicorn's default read it from 127.0.0.1, so
    any process on the machine could name another address in an audit event, a
    decision's source_ip and the failed sign-ins' rate limit. Read only from
    ``trusted_proxies``."""
    token = served.line_after("admin token for local-admin")
    served.wait_ready()
    _signed_in_from(served.url, token, "203.0.113.9")
    assert _login_sources(served.url, token) == ["127.0.0.1"]
    assert served.stop() in STOPPED

    (Path(env["PROCTOR_HOME"]) / "server.toml").write_text(
        'trusted_proxies = ["127.0.0.1"]\n', encoding="utf-8")
    behind = Served(env)
    try:
        behind.wait_ready()
        _signed_in_from(behind.url, token, "203.0.113.9")
        assert sorted(map(str, _login_sources(behind.url, token))) == [
            "127.0.0.1", "203.0.113.9"]
    finally:
        assert behind.stop() in STOPPED


def test_trusted_proxies_are_addresses_or_networks(env: dict[str, str]) -> None:
    home = Path(env["PROCTOR_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "server.toml").write_text('trusted_proxies = ["*"]\n', encoding="utf-8")
    refused = _refused(env)
    assert refused.exit_code == 1
    assert "`trusted_proxies` entry `*` is not an IP address or network (trusting every " \
        "peer would let any client name any address)" in refused.stderr
    assert refused.stderr.count("\n") == 1
