"""Which key a grant is bound to: one the agent it names has proved, never one chosen by
whoever asks for the grant.

- An agent with a registered key: that key. A holder proof, if sent, must be signed
  by it.
- An agent without one (JWT-SVID, OIDC): the key of a :class:`HolderProof` that
  comes with the agent's *own* identity proof, and whose ``ath`` is the hash of
  that identity proof, so the key is tied to the agent's identity and not to the
  request. Only the agent holds its identity proof; a delegator or an operator
  asking for the agent's grant gets an offer (:mod:`proctor.grants.offers`).
- A pre-approval grant ("approve similar", never handed out): the key of the grant
  the approved call was made with, which the agent proved then.

Using a grant takes a proof of possession per call, made by the agent and checked
by the decider. Where the two are one process (``proctor mcp wrap`` holds the
agent's grant and key and decides its calls), that proof would prove to the
process what it already knows: the process checks possession once instead, when
it loads the grant and the key (:meth:`~proctor.grants.GrantAuthority.hold`), and
each call names the :class:`HeldGrant` it made (:meth:`~proctor.grants.GrantAuthority.
prepare_held`). A held grant is a value in the holder's memory, made only from the
private key: nothing read from a network or a pipe can name one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proctor.errors import GrantError
from proctor.grants.proofs import PrivateKey, jwk_thumbprint, public_jwk
from proctor.grants.tokens import GrantClaims

__all__ = ["HeldGrant", "HolderProof", "held_with"]

_MINTED = object()  # only held_with makes a HeldGrant, after its check


@dataclass(frozen=True, slots=True)
class HolderProof:
    """What an agent presents to have a grant bound to a key it holds.

    ``proof`` is a proof of possession (``htm`` ``grant/issue``, ``htu`` the issuer)
    signed by the key. ``identity`` is the agent's own identity proof (its JWT-SVID
    or OIDC workload token, with proctor's audience), required when the agent has
    no registered key; the proof's ``ath`` is then the hash of ``identity``.
    """

    proof: str
    identity: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class HeldGrant:
    """A grant whose key this process holds: the public key of the private key it was
    loaded with has the grant's ``cnf.jkt`` as its thumbprint, checked once, when
    :meth:`~proctor.grants.GrantAuthority.hold` made it. The key itself is not kept.

    Each use still checks everything about the grant but the proof: its signature,
    expiry, revocation, agent, task, scope and uses (no nonce: there is no proof to
    replay)."""

    token: str = field(repr=False)
    claims: GrantClaims
    minted: object = field(repr=False)

    def __post_init__(self) -> None:
        if self.minted is not _MINTED:
            raise TypeError("a held grant is made by GrantAuthority.hold, which checks the key")


def held_with(key: PrivateKey, token: str, claims: GrantClaims) -> HeldGrant:
    """``token`` held with ``key``, whose public thumbprint must be ``claims``' ``cnf.jkt``
    (else ``proof_wrong_key``); ``claims`` are the token's, checked
    (:meth:`~proctor.grants.GrantAuthority.hold`)."""
    if jwk_thumbprint(public_jwk(key)) != claims.key_thumbprint:
        raise GrantError("proof_wrong_key", "the key is not the one the grant is bound to")
    return HeldGrant(token, claims, _MINTED)
