"""Where an HTTP server of proctor listens, and when that needs a ``public_url``.

A DPoP proof names the URL it is for (``htu``). ``proctor serve`` and the HTTP
gateway check it against ``public_url``, the address the operator configured.
Without one they fall back to an address a caller can choose (the server: the
request's own scheme and ``Host``; the gateway: its listening address), which is
acceptable only when nothing but this machine can reach them. So a server that
listens anywhere but on loopback refuses to start without ``public_url``.

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
(True, True, False)
"""

from __future__ import annotations

import ipaddress

from proctor.errors import ConfigError

__all__ = ["is_loopback", "require_public_url", "split_listen"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address or ``localhost``; any other name, a
    wildcard (``0.0.0.0``, ``::``) or a LAN address is not."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # a name could resolve to any address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6) as the host and the port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address `{listen}` is not HOST:PORT")
    return host.strip("[]"), int(port)


def require_public_url(host: str, public_url: str, *, what: str, where: str) -> None:
    """Raise :class:`ConfigError` if ``what`` listens on ``host``, not loopback, and no
    ``public_url`` is configured (in ``where``)."""
    if public_url or is_loopback(host):
        return
    raise ConfigError(f"{what} listens on `{host}`, not loopback, so it needs `public_url` "
                      f"in {where}: the URL clients address, which their DPoP proofs must name")
