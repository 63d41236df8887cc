"""What the grants part needs of the agent registry, as a protocol (the registry's
adapter is :class:`~proctor.grants.directory.RegisteredAgents`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from proctor.audit import WriteCursor
from proctor.config import DELEGATOR_MAX_RISK
from proctor.errors import AgentError, GrantError

__all__ = ["DELEGATOR_MAX_RISK", "AgentBinding", "AgentDirectory", "AgentEnded",
           "binding_refusal", "line_refusal"]


@dataclass(frozen=True, slots=True)
class AgentBinding:
    """What grants need to know of an agent: its registered key, and whether it is active.

    ``key_thumbprint`` is None for agents that prove themselves with a JWT-SVID or
    an OIDC token: each of their grants is bound to a key they prove themselves,
    together with their identity proof (:mod:`proctor.grants.holders`).
    """

    agent_id: str
    key_thumbprint: str | None
    is_active: bool
    trust_state: str = "trusted"
    manifest_digest: str | None = None  # the manifest it runs now: presented, else reviewed
    # its risk (``principal.risk_score``, ``principal.risk_factors``); the factors are read
    # by the use's write (:meth:`AgentDirectory.binding_in`) only
    risk_score: int = 0
    risk_factors: tuple[str, ...] = ()


def binding_refusal(binding: AgentBinding | None, key_thumbprint: str,
                    manifest_digest: str | None) -> GrantError | None:
    """Why a grant bound to ``key_thumbprint`` (issued while its agent ran
    ``manifest_digest``) may not be used by the agent ``binding`` says, or None.

    The grant check asks it of the agent as the process sees it, and the use's write
    asks it again of the agent's row as committed (:mod:`proctor.grants.use`)."""
    if binding is None or binding.key_thumbprint not in (None, key_thumbprint):
        return GrantError("grant_wrong_agent", "the grant's agent or key is no longer valid")
    if not binding.is_active:
        return AgentError("agent_not_active", "the grant's agent is suspended or retired")
    if manifest_digest is not None and binding.manifest_digest is not None \
            and manifest_digest != binding.manifest_digest \
            and binding.trust_state == "trusted":
        # A drifted or unattested agent is re-gated by policy; a trusted one was
        # reviewed on another manifest since: the grant was not issued for what runs.
        return GrantError("grant_manifest_changed",
                          "the grant was issued while the agent ran another manifest; "
                          "ask for a new grant")
    return None


def line_refusal(find: Callable[[str], AgentBinding | None],
                 actor_chain: tuple[str, ...], manifests: tuple[str | None, ...] = (), *,
                 max_risk: int) -> GrantError | None:
    """Why a grant delegated along ``actor_chain`` (its delegators, nearest first: the
    grant's ``act`` chain) may not be used now, or None: every agent it derives from
    must be registered, active and ``trusted`` as ``find`` reads it, with a risk score
    below ``max_risk`` (the setting ``delegator_max_risk``), and, where ``manifests``
    names the manifest an agent's own grant was issued under (as ``actor_chain``: the
    token's ``act`` entries' ``mfd``), still running it: a delegator a human reviewed
    onto another manifest since lends nothing it handed on under the old one
    (``grant_manifest_changed``, as its own grant is). Authority handed on by an
    agent whose manifest drifted since, that is unattested, or whose behaviour made it
    risky, is re-gated as that agent's own is: a human reviews it (or its score falls),
    and the line's grants work again (nothing is revoked). A suspended or retired
    delegator revoked the line already; said so here too, when this process's view
    hears of it first.

    Asked by a delegated grant's check (its view of the agents: no store read when the
    view is warm), by its use's write of the rows as committed
    (:mod:`proctor.grants.use`), and by an exchange's redemption for the agents before
    its delegator. A grant of depth 0 has an empty chain: nothing is read."""
    for at, agent_id in enumerate(actor_chain):
        binding = find(agent_id)
        if binding is not None and binding.trust_state == "trusted" and binding.is_active:
            manifest = manifests[at] if at < len(manifests) else None
            if manifest is not None and binding.manifest_digest is not None \
                    and manifest != binding.manifest_digest:
                return GrantError("grant_manifest_changed", f"agent `{agent_id}`, which the "
                                  "grant derives from, was reviewed on another manifest "
                                  "since it handed the grant on: ask for a new grant")
            if binding.risk_score < max_risk:
                continue
            return GrantError("delegator_not_trusted", f"agent `{agent_id}`, which the grant "
                              f"derives from, has a risk score of {binding.risk_score} "
                              f"(limit {max_risk}): authority it handed on is not used "
                              "until its risk falls")
        if binding is not None and not binding.is_active:
            return GrantError("grant_revoked", f"agent `{agent_id}`, which the grant derives "
                              f"from, is {binding.trust_state}: its grants and everything "
                              "delegated from them are revoked")
        state = "not registered" if binding is None else binding.trust_state
        return GrantError("delegator_not_trusted", f"agent `{agent_id}`, which the grant "
                          f"derives from, is {state} now: a human must review it before "
                          "authority it handed on is used again")
    return None


AgentEnded = Callable[[Connection, str, str], Callable[[], None]]
"""``(conn, agent_id, reason)``: runs in the transaction that suspends or retires an
agent; returns what to do once it has committed."""


class AgentDirectory(Protocol):
    """What grants need of the agent registry."""

    def binding(self, agent_id: str) -> AgentBinding | None:
        """The agent's key and whether it is active, as of now (None: unknown)."""

    def binding_seen(self, agent_id: str) -> AgentBinding | None:
        """:meth:`binding` as this process's view of the agents has it (it may not yet
        have heard a change committed on another node): only for a use whose write
        confirms it (:meth:`binding_in`)."""

    def prove(self, identity_proof: str) -> str:
        """The id of the active agent ``identity_proof`` (a JWT-SVID, an OIDC workload
        token or an own-key proof, for proctor's audience alone) proves; raises an
        :class:`~proctor.errors.IdentityError` otherwise."""

    def confirm_active(self, conn: Connection, agent_id: str) -> bool:
        """Whether the agent is active, read in ``conn``'s transaction so that a
        suspension committing meanwhile is seen (or waited for)."""

    def state_in(self, tx: WriteCursor, agent_id: str) -> str | None:
        """The agent's trust state as ``tx`` (the audit writer's transaction) sees it
        now (None: unknown): a suspension that committed first is seen, one running is
        waited for."""

    def binding_in(self, tx: WriteCursor, agent_id: str) -> AgentBinding | None:
        """:meth:`binding` as ``tx`` (the audit writer's transaction) sees it now, its
        risk included, read once per transaction, as :meth:`state_in` reads the state."""

    def on_deactivated(self, hook: AgentEnded) -> None:
        """Run ``hook`` in every transaction that suspends or retires an agent."""
