"""The values of an issuance (:mod:`proctor.grants.issuance`): the grant asked for
(:class:`Request`, made from a :class:`ParentGrant` when delegated), what policy decided
on (:class:`DecidedOn`, :class:`Delegator`, :class:`Decided`) and the grant made
(:class:`IssuedGrant`). Kept apart so the decisions, the write and the enforcer can all
name them without the issuer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from proctor.audit import AuditEvent
from proctor.grants.scope import GrantScope
from proctor.grants.tasks import Task
from proctor.grants.tokens import GrantClaims
from proctor.grants.use import Risk

# an issuance whose write refused it for what another process had changed meanwhile:
# decided once more, on what is committed
STALE = ("agent_changed", "policy_changed")


@dataclass(frozen=True, slots=True)
class IssuedGrant:
    token: str
    accessor: str
    claims: GrantClaims

    @property
    def grant_id(self) -> str:
        return self.claims.grant_id


class DecidedOn(NamedTuple):
    """The agent as policy will decide an issuance on it: its trust state and its risk
    (``principal.risk_score``, ``principal.risk_factors``). A grant's write confirms
    both (``agent_changed``), as a call's does. ``entity``: its Cedar entity as read,
    which policy decides on (``PolicyEngine.decide``'s ``agent``), whatever version of
    the agent the engine holds meanwhile (None: the engine's)."""

    state: str
    risk: Risk
    entity: Mapping[str, Any] | None = None


class Delegator(NamedTuple):
    """An exchange's delegator as the child's tools were decided for it: its agent id, the
    trust state and risk read from the store (None: not known), and the key and manifest
    its grant (the parent) is bound to. The child's write confirms them as it confirms its
    own agent (``agent_changed``), and the parent still usable by them."""

    agent_id: str
    decided: DecidedOn | None
    key_thumbprint: str
    manifest_digest: str | None


class ParentGrant(NamedTuple):
    """The grant a delegated grant (or offer) is made from, as its delegator holds it:
    the grant, its agent (the delegator) and that grant's own line, which the child's
    tools are decided in for the delegator, and the key and manifest it is bound to,
    which the child's write confirms the delegator still holds (:class:`Delegator`)."""

    grant_id: str
    agent_id: str
    ancestors: tuple[str, ...]
    actor_chain: tuple[str, ...]
    key_thumbprint: str
    manifest_digest: str | None
    # the manifests the grants of its line were issued under (as ``actor_chain``)
    actor_manifests: tuple[str | None, ...] = ()

    @classmethod
    def of(cls, claims: GrantClaims) -> ParentGrant:
        return cls(claims.grant_id, claims.agent_id, claims.ancestors, claims.actor_chain,
                   claims.key_thumbprint, claims.manifest_digest, claims.line_manifests)


class EnsureCurrent(Protocol):
    def __call__(self, agent_id: str, *, strict: bool) -> DecidedOn | None: ...


@dataclass(frozen=True, slots=True)
class Decided:
    """An issuance policy allowed on every tool: its decisions' events, unwritten, the
    agent's trust state and risk they were decided on (None: not known) and the policy
    revisions they were decided on (None: not confirmed)."""

    events: list[AuditEvent]
    agent: DecidedOn | None = None
    revisions: frozenset[int | None] | None = None
    again: bool = False  # a stale refusal of its write is decided once more
    delegator: Delegator | None = None  # an exchange's: confirmed by the write too


@dataclass(frozen=True, slots=True)
class Request:
    """One grant to make: for whom, under what, for how long (absolute), how often."""

    task: Task
    agent_id: str
    scope: GrantScope
    expires_at: int
    max_uses: int | None
    parent_id: str  # the task, or the grant it is delegated from
    ancestors: tuple[str, ...] = ()
    actor_chain: tuple[str, ...] = ()
    approved: bool = False
    wildcards: GrantScope | None = None  # as asked for: later tools are decided then
    manifest_digest: str | None = None  # the manifest the agent runs as it is issued
    agent_key: str | None = None  # the agent's registered key as read (a write confirms it)
    # the manifest each grant of ``actor_chain`` was issued under: the child token's `act`
    # carries them, and each use confirms its delegator still runs it
    actor_manifests: tuple[str | None, ...] = ()

    @property
    def lineage(self) -> tuple[str, ...]:
        return (*self.ancestors, self.task.id) if self.ancestors else (self.task.id,)
