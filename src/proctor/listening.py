"""Where an HTTP server of proctor listens, and when that needs a ``public_url``.

A DPoP proof names the URL it is for (``htu``). ``proctor serve`` and the HTTP
gateway check it against ``public_url``, the address the operator configured.
Without one they fall back to an address a caller can choose (the server: the
request's own scheme and ``Host``; the gateway: its listening address), which is
acceptable only when nothing but this machine can reach them. So a server that
listens anywhere but on loopback refuses to start without ``public_url``.

Behind a reverse proxy or load balancer, the client's address and scheme reach the
server in ``X-Forwarded-For`` and ``X-Forwarded-Proto``. Anyone can send those
headers, so both servers read them only from the proxies the operator names
(``trusted_proxies``) and ignore them otherwise (:func:`forwarded_options`): the
address a decision's context and its audit event carry, and the per-client rate
limit's key, are the peer's own unless a named proxy vouches for another.

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
(True, True, False)
>>> forwarded_options(())
{'proxy_headers': False, 'forwarded_allow_ips': None}
>>> forwarded_options(trusted_proxies(["10.0.0.2", "10.1.0.0/16"], where="x"))
{'proxy_headers': True, 'forwarded_allow_ips': ['10.0.0.2', '10.1.0.0/16']}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from proctor.errors import ConfigError

__all__ = ["forwarded_options", "is_loopback", "require_public_url", "split_listen",
           "trusted_proxies"]

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


def trusted_proxies(value: Any, *, where: str) -> tuple[str, ...]:
    """``value`` (a list of IP addresses and networks) as the proxies whose
    ``X-Forwarded-*`` headers a server reads; raises :class:`ConfigError` naming
    ``where`` for anything else. ``*`` (trust every peer) is refused: then any client
    could name any address."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `trusted_proxies` must be a list of IP addresses or "
                          "networks")
    found: list[str] = []
    for entry in value:
        text = entry.strip()
        try:
            if "/" in text:
                ipaddress.ip_network(text)
            else:
                ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(
                f"{where}: `trusted_proxies` entry `{entry}` is not an IP address or network"
                + (" (trusting every peer would let any client name any address)"
                   if text == "*" else "")) from None
        found.append(text)
    return tuple(found)


def forwarded_options(proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's options for ``X-Forwarded-For``/``-Proto``: read from ``proxies`` only,
    and not at all without any (uvicorn's own default trusts 127.0.0.1, so that any
    process on the machine could name another client address)."""
    return {"proxy_headers": bool(proxies), "forwarded_allow_ips": list(proxies) or None}
