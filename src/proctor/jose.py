"""JOSE facts every part checks alike (RFC 7517, RFC 7518, RFC 9449).

One definition of what makes a JWK private, so a key that carries secrets is
refused the same way wherever proctor reads one: an agent's registration, a
trust bundle, a proof of possession.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PRIVATE_MEMBERS", "private_members"]

# RFC 7518 §6.2.2 (EC, OKP: "d"), §6.3.2 (RSA) and §6.4 (symmetric "k").
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def private_members(jwk: Mapping[str, Any]) -> list[str]:
    """The private or symmetric members ``jwk`` carries, sorted; empty for a public key.

    >>> private_members({"kty": "EC", "crv": "P-256", "x": "…", "y": "…", "d": "…"})
    ['d']
    """
    return sorted(PRIVATE_MEMBERS & set(jwk))
