"""The plug point for identity proofs, and what a verified proof yields.

A :class:`ProofVerifier` checks one kind of token and returns a
:class:`VerifiedIdentity`, or raises an :class:`~proctor.errors.IdentityError`
whose ``code`` (``proof_expired``, ``agent_unknown``, ...) says exactly what was
wrong. Verifiers never change state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from proctor.identity.agent import Agent, ProofMethod
from proctor.identity.request_proofs import ProofUse

__all__ = ["AgentFinder", "AgentLookup", "ProofVerifier", "VerifiedIdentity"]


@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """Who a proof says the agent is, after every check passed.

    ``key_thumbprint`` is the RFC 7638 thumbprint of the agent's own key (own-key
    proofs only); ``issuer`` and ``subject`` are the token's (OIDC, JWT-SVID); ``use``
    is the one use of an own-key proof checked against its request, for the caller to
    claim (:mod:`proctor.identity.request_proofs`).
    """

    agent_id: str
    method: ProofMethod
    expires_at: datetime
    key_thumbprint: str | None = None
    issuer: str | None = None
    subject: str | None = None
    claims: Mapping[str, Any] | None = None
    use: ProofUse | None = None


class ProofVerifier(Protocol):
    """Checks one kind of identity proof."""

    @property
    def method(self) -> ProofMethod: ...

    def verify(self, token: str, *, now: datetime) -> VerifiedIdentity: ...


class AgentFinder(Protocol):
    """Where agents are found by id: the registry, or a process's view of it."""

    def find(self, agent_id: str) -> Agent | None: ...


class AgentLookup(AgentFinder, Protocol):
    """Where verifiers find registered agents (the registry implements it)."""

    def find_by_subject(self, issuer: str, subject: str) -> Agent | None: ...

