"""The agent registry as the grants part sees it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from proctor.audit import WriteCursor
from proctor.clock import Clock
from proctor.errors import IdentityError
from proctor.grants.agents import AgentBinding, AgentEnded
from proctor.identity import Agent, AgentRegistry, AgentView, Attestation, Authenticator
from proctor.identity.agent import ACTIVE_STATES
from proctor.store import Store
from proctor.store.tables import agents

__all__ = ["BINDING_COLUMNS", "RegisteredAgents", "binding_of_row"]

_MAX_BINDINGS = 100_000

_BINDING = ("SELECT id, key_thumbprint, trust_state, COALESCE(presented_digest, "
            "manifest_digest), risk_score FROM agents WHERE id = {p}")
# the use's write reads the agent's risk with it, in the same statement; a use's write
# on SQLite reads these columns with its tasks and lease nodes (proctor.grants.use)
BINDING_COLUMNS = ("id, key_thumbprint, trust_state, COALESCE(presented_digest, "
                   "manifest_digest), risk_score, risk_factors")
_BINDING_IN = "SELECT " + BINDING_COLUMNS + " FROM agents WHERE id = {p}"  # noqa: S608


class RegisteredAgents:
    """Looks agents up as of now, so a suspension takes effect at once.

    With ``view`` (the process's :class:`~proctor.identity.AgentView`) and a change
    feed that hears every commit before it answers (SQLite), from memory; otherwise
    on the store's fast read path, since every grant check asks. An id not found as
    written goes through the registry, which normalises it.

    ``attest``: makes what a workload token attests with its audit event (the runtime's
    :func:`proctor.oversight.drifting.attest`); kept as :attr:`attest` for the
    process's other authenticators.
    """

    def __init__(self, registry: AgentRegistry, store: Store, clock: Clock, *,
                 view: AgentView | None = None,
                 attest: Callable[[Attestation], Agent] | None = None) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self.attest = attest
        self._authenticator = Authenticator(registry, clock=clock, attest=attest)
        self._view = view if view is not None and view.sees_every_commit else None
        self._seen = view  # on any store: for the uses whose write confirms the binding
        # the binding made of each agent the view held last (an Agent is a value: the
        # view hands out the same one until the agent changes), made once, not per check
        self._bindings: dict[str, tuple[Agent, AgentBinding]] = {}

    def binding(self, agent_id: str) -> AgentBinding | None:
        if self._view is not None:
            return self._binding_of(self._view.find(agent_id))
        rows = self._store.fetch(_BINDING, [agent_id])
        if rows:
            found, thumbprint, state, digest, score = rows[0]
            return AgentBinding(found, thumbprint, state in ACTIVE_STATES, state, digest,
                                int(score))
        return _binding(self._registry.find(agent_id))

    def binding_seen(self, agent_id: str) -> AgentBinding | None:
        # no store read per grant check when the view is current: the use's write
        # reads the agent's row again (binding_in) and refuses what changed meanwhile
        if self._seen is not None:
            return self._binding_of(self._seen.find(agent_id))
        return self.binding(agent_id)

    def _binding_of(self, agent: Agent | None) -> AgentBinding | None:
        """:func:`_binding` of ``agent``, the one made before when the view still holds
        this very agent (a changed agent is a new value: its binding is made anew)."""
        if agent is None:
            return None
        made = self._bindings.get(agent.id)
        if made is not None and made[0] is agent:
            return made[1]
        binding = _binding_for(agent)
        if len(self._bindings) >= _MAX_BINDINGS:
            self._bindings.clear()
        self._bindings[agent.id] = (agent, binding)
        return binding

    def prove(self, identity_proof: str) -> str:
        # no request: an own-key proof is refused here (it is taken only by the request it
        # names; an agent with its own key has its grants bound to that key anyway)
        found = self._authenticator.authenticate(identity_proof, request=None)
        # The proof binds a key to the agent (a grant's cnf): it must be for proctor
        # alone. A token for other audiences too is in their hands as well, and any of
        # them could tie it to a key of its own and act as the agent.
        aud = (found.identity.claims or {}).get("aud")
        if isinstance(aud, list) and len(aud) != 1:
            raise IdentityError("proof_wrong_audience", f"an identity proof that binds a key "
                                f"names proctor's audience alone; this one names {len(aud)}")
        return found.agent.id

    def confirm_active(self, conn: Connection, agent_id: str) -> bool:
        # FOR SHARE on PostgreSQL: a suspension holding the row is waited for, then seen
        state = conn.execute(select(agents.c.trust_state).where(agents.c.id == agent_id)
                             .with_for_update(read=True)).scalar()
        return state in ACTIVE_STATES

    def state_in(self, tx: WriteCursor, agent_id: str) -> str | None:
        binding = self.binding_in(tx, agent_id)
        return binding.trust_state if binding is not None else None

    def binding_in(self, tx: WriteCursor, agent_id: str) -> AgentBinding | None:
        # read once per transaction: the row stays as read (locked, on PostgreSQL)
        confirmed = tx.confirmed
        if ("agent", agent_id) not in confirmed:
            rows = tx.rows(_BINDING_IN + tx.for_share, [agent_id])
            confirmed["agent", agent_id] = binding_of_row(rows[0]) if rows else None
        known = confirmed["agent", agent_id]
        return known if isinstance(known, AgentBinding) else None

    def on_deactivated(self, hook: AgentEnded) -> None:
        def adapted(conn: Connection, agent: Agent, reason: str) -> Callable[[], None]:
            return hook(conn, agent.id, reason)
        self._registry.on_deactivated(adapted)


def binding_of_row(row: Sequence[Any]) -> AgentBinding:
    """The binding of an agent's row read as :data:`BINDING_COLUMNS`."""
    found_id, thumbprint, state, digest, score, factors = row
    return AgentBinding(str(found_id), thumbprint, state in ACTIVE_STATES, str(state), digest,
                        int(score), _factors(factors))


def _factors(value: object) -> tuple[str, ...]:
    """``risk_factors`` as stored (JSON text on SQLite, a list on PostgreSQL; NULL: none),
    as :attr:`Agent.risk_factors` has them."""
    if value is None or value == "[]":  # none named: most agents, on every use's write
        return ()
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(str(f) for f in value) if isinstance(value, list) else ()


def _binding(agent: Agent | None) -> AgentBinding | None:
    return None if agent is None else _binding_for(agent)


def _binding_for(agent: Agent) -> AgentBinding:
    return AgentBinding(agent.id, agent.key_thumbprint, agent.is_active,
                        agent.trust_state.value, agent.presented_digest or agent.manifest_digest,
                        agent.risk_score)
