"""The port ``proctor serve --workers N`` holds, and the socket each worker listens on."""

from __future__ import annotations

import pickle
import socket
import sys
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler

import pytest

from proctor.server.workers import reserve

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT shares out on Linux")


@pytest.fixture
def reserved() -> Iterator[socket.socket]:
    port = reserve("127.0.0.1", 0)
    assert port is not None
    yield port
    port.close()


def as_worker_gets_it(port: socket.socket) -> socket.socket:
    """The socket a worker unpickles from what uvicorn's supervisor sends it."""
    sock: socket.socket = pickle.loads(ForkingPickler.dumps(port))  # noqa: S301 (ours)
    return sock


def accepted(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def connect(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def test_each_worker_listens_on_a_socket_of_its_own_and_the_kernel_shares_connections_out(
        reserved: socket.socket) -> None:
    first, second = as_worker_gets_it(reserved), as_worker_gets_it(reserved)
    try:
        assert type(first) is socket.socket
        assert first.fileno() != reserved.fileno() != second.fileno()
        assert first.getsockname() == second.getsockname() == reserved.getsockname()
        first.listen(64)
        second.listen(64)
        clients = connect(reserved.getsockname()[1], 40)
        # the supervisor's socket never listens: it gets none; the two workers get all,
        # each some (by a hash of each connection's addresses: all 40 on one has odds 2^-39)
        counts = accepted(first), accepted(second)
        assert sum(counts) == 40 and min(counts) > 0
        for client in clients:
            client.close()
    finally:
        first.close()
        second.close()


def test_a_worker_gone_leaves_its_connections_to_the_others(reserved: socket.socket) -> None:
    first, second = as_worker_gets_it(reserved), as_worker_gets_it(reserved)
    first.listen(64)
    second.listen(64)
    second.close()  # the worker died
    try:
        clients = connect(reserved.getsockname()[1], 20)
        assert accepted(first) == 20
        # and the worker started in its place listens on the same port again
        again = as_worker_gets_it(reserved)
        again.listen(64)
        more = connect(reserved.getsockname()[1], 40)
        counts = accepted(first), accepted(again)
        assert sum(counts) == 40 and min(counts) > 0
        for client in clients + more:
            client.close()
        again.close()
    finally:
        first.close()


def test_a_port_held_is_refused_to_a_program_that_does_not_share_it(
        reserved: socket.socket) -> None:
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(reserved.getsockname())


def test_a_port_in_use_cannot_be_reserved() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        with pytest.raises(OSError):
            reserve("127.0.0.1", other.getsockname()[1])
