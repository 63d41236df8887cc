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
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HolderProof"]


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
