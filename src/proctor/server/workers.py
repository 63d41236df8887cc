"""How ``proctor serve --workers N`` shares its port out: a listening socket per worker.

uvicorn's supervisor binds one socket and hands it to every worker, which all accept
from its one queue: connections opened together (a client's pool, a load balancer's)
land on whichever worker wakes first, and one worker was measured taking 70-100 % of
the event loops' CPU while the other idled (docs/benchmarks.md). On Linux the kernel
can share them out itself (``SO_REUSEPORT``: each new connection goes to one of the
listening sockets of the port, by a hash of its addresses), so here each worker
listens on a socket of its own:

- the supervisor holds the port with :class:`ReservedPort`, bound with ``SO_REUSEPORT``
  and never listening (a socket that does not listen gets no connections), so that no
  other program takes the port between two workers' lives;
- uvicorn hands a worker its sockets by pickling them: a :class:`ReservedPort` is
  pickled as its address, and a worker unpickles it as a new socket bound to that
  address (:func:`worker_socket`), which uvicorn then listens on. A worker started
  again after a death binds another the same way.

The kernel lets only a process of the same effective user join the port's group of
sockets (one that could as well read the server's memory); any other program is refused
the port as before.

When a worker dies, the connections its socket had queued but not yet accepted are
reset (with a shared socket the other worker would have accepted them); new ones go
to the sockets still listening. Elsewhere than on Linux, uvicorn's shared socket is
kept (:func:`reserve`).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

__all__ = ["ReservedPort", "reserve", "worker_socket"]


def _reuse_port(family: socket.AddressFamily, address: Any, cls: type[socket.socket]
                ) -> socket.socket:
    sock = cls(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def worker_socket(family: socket.AddressFamily, address: Any) -> socket.socket:
    """A worker's own socket on ``address`` (the reserved port's), not yet listening."""
    return _reuse_port(family, address, socket.socket)


class ReservedPort(socket.socket):
    """The supervisor's hold on the port; pickled as its address, for
    :func:`worker_socket` to bind in the worker that unpickles it."""

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return worker_socket, (self.family, self.getsockname())


def reserve(host: str, port: int) -> socket.socket | None:
    """The port held for the workers (``port`` 0: one the system picks), or None where
    the kernel does not share connections among sockets (uvicorn then binds its own).
    Raises :class:`OSError` if the port cannot be had."""
    if sys.platform != "linux" or not hasattr(socket, "SO_REUSEPORT"):
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _reuse_port(family, (host, port), ReservedPort)
