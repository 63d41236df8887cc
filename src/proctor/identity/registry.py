"""The agent registry: registration, manifests and trust-state changes, in the store.

Every change is one transaction that reads the agent's row locked, decides
from what it read, and writes; a refused change raises and writes nothing.
The reviewed manifest is only ever replaced by a human's review.

Trust-state changes::

    registered ──► trusted ◄──── review ────┐
                     │  present other        │
                     ▼  manifest             │
                   drifted ──────────────────┤
    trusted/drifted ── suspend ──► suspended ┘ (review reinstates)
    any ── retire ──► retired (final)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from proctor.clock import Clock
from proctor.errors import (
    AgentError,
    ConfigError,
    IdentityError,
    RequestError,
    ReviewUnnamedError,
)
from proctor.identity.agent import (
    Agent,
    JwtSvidProof,
    OidcProof,
    OwnKeyProof,
    ProofMethod,
    ProofSpec,
    TrustState,
)
from proctor.identity.agent_key import import_agent_key
from proctor.identity.manifest import Manifest
from proctor.identity.people import check_groups, check_human
from proctor.identity.rows import agent_from_row
from proctor.identity.spiffe_id import parse_agent_id
from proctor.identity.trust import TrustConfig
from proctor.store import Store
from proctor.store.tables import agents

__all__ = ["AgentRegistry"]

_Change = Callable[[Agent], dict[str, Any] | None]
DeactivationHook = Callable[[Connection, Agent, str], Callable[[], None]]
"""Runs inside the transaction that suspends or retires an agent, with the agent as it
now is and the reason; returns what to do once that transaction has committed."""


class AgentRegistry:
    """Registered agents in ``store``; ``trust`` says which bundles and issuers exist.

    ``starting_risk`` is the score a new agent is registered with: the risk engine's prior
    (``RiskConfig.prior``, docs/risk.md), so policies see a new agent at the prior from its
    first decision, as ``proctor agent risk`` explains it, not at 0 until its first call is
    folded.
    """

    def __init__(self, store: Store, clock: Clock, trust: TrustConfig, *,
                 starting_risk: int = 0) -> None:
        self._store = store
        self._clock = clock
        self.trust = trust
        self._starting_risk = max(0, min(100, starting_risk))  # a score is 0..100
        self._on_deactivated: list[DeactivationHook] = []
        self._on_changed: list[Callable[[str], None]] = []

    def on_deactivated(self, hook: DeactivationHook) -> None:
        """Run ``hook`` in every transaction that :meth:`suspend` or :meth:`retire` makes.

        The grants part registers one that revokes every grant the agent holds, so a
        suspension and the end of the agent's grants commit together, or not at all.
        (:func:`~proctor.oversight.standing.change_standing`, which every path of
        proctor's takes, makes that change in the audit writer's transaction instead, and
        revokes there.)
        """
        self._on_deactivated.append(hook)

    def on_changed(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(agent_id)`` once a change this registry made to an agent has
        committed (before the change returns): a view of this process drops its copy
        then, without waiting for the change feed's news of it (PostgreSQL)."""
        self._on_changed.append(hook)

    def changed(self, agent_id: str) -> None:
        """Run the :meth:`on_changed` hooks for a change to ``agent_id`` that committed in
        another transaction of this process (the audit writer's: a suspension made with
        its event, or one of its own when the log is down, :mod:`proctor.oversight.standing`)."""
        for hook in self._on_changed:
            hook(agent_id)

    # reading

    def find(self, agent_id: str) -> Agent | None:
        """The agent with this id, or None; raises ``agent_id_invalid`` for a malformed id."""
        key = parse_agent_id(agent_id).id
        with self._store.reading() as conn:
            row = conn.execute(select(agents).where(agents.c.id == key)).first()
        return agent_from_row(row) if row is not None else None

    def get(self, agent_id: str) -> Agent:
        agent = self.find(agent_id)
        if agent is None:
            raise AgentError("agent_unknown",
                                f"agent `{parse_agent_id(agent_id).id}` is not registered")
        return agent

    def find_by_subject(self, issuer: str, subject: str) -> Agent | None:
        """The agent registered for ``subject`` of OIDC ``issuer``, or None."""
        query = select(agents).where(agents.c.oidc_issuer == issuer,
                                     agents.c.oidc_subject == subject)
        with self._store.reading() as conn:
            row = conn.execute(query).first()
        return agent_from_row(row) if row is not None else None

    def list_agents(self, *, state: TrustState | None = None) -> list[Agent]:
        query = select(agents).order_by(agents.c.id)
        if state is not None:
            query = query.where(agents.c.trust_state == state.value)
        with self._store.reading() as conn:
            return [agent_from_row(row) for row in conn.execute(query).all()]

    # registering

    def register(self, agent_id: str, *, owner: str, proof: ProofSpec, manifest: Manifest,
                 groups: Iterable[str] = (), registered_by: str | None = None) -> Agent:
        """Register an agent as ``trusted`` with ``manifest`` as its reviewed manifest.

        ``registered_by`` (default: the owner) is recorded as the reviewer.
        """
        values = self.registration(agent_id, owner=owner, proof=proof, manifest=manifest,
                                   groups=groups, registered_by=registered_by)
        parsed = parse_agent_id(agent_id)
        with self._store.transaction() as conn:
            self._check_unique(conn, parsed.id, values)
            try:
                conn.execute(insert(agents).values(**values))
            except IntegrityError as exc:  # a concurrent registration won the race
                raise IdentityError("agent_exists", f"agent `{parsed.id}` or its key or subject is "
                                       "already registered") from exc
            row = conn.execute(select(agents).where(agents.c.id == parsed.id)).one()
        return agent_from_row(row)

    def registration(self, agent_id: str, *, owner: str, proof: ProofSpec, manifest: Manifest,
                     groups: Iterable[str] = (), registered_by: str | None = None,
                     ) -> dict[str, Any]:
        """The row :meth:`register` inserts (checked: the owner, the reviewer, the groups,
        the proof), and refusals of what is already registered (read now: the insert may
        still find a registration that won the race)."""
        parsed = parse_agent_id(agent_id)
        owner = check_human(owner, "owner")
        reviewer = check_human(registered_by or owner, "reviewer")
        group_list = check_groups(groups)
        columns = self._proof_columns(parsed.trust_domain, parsed.name, proof)
        now = self._clock.now()
        values = {
            "id": parsed.id, "name": parsed.name, "trust_domain": parsed.trust_domain,
            "owner": owner, "groups": group_list, "trust_state": TrustState.TRUSTED.value,
            "risk_score": self._starting_risk, "manifest": manifest.as_json(),
            "manifest_digest": manifest.digest,
            "presented_manifest": None, "presented_digest": None, "reviewed_by": reviewer,
            "reviewed_at": now, "state_changed_by": reviewer, "state_reason": None,
            "created_at": now, "updated_at": now, **columns,
        }
        with self._store.reading() as conn:
            self._check_unique(conn, parsed.id, values)
        return values

    def _proof_columns(self, trust_domain: str, name: str, proof: ProofSpec) -> dict[str, Any]:
        columns: dict[str, Any] = {"public_jwk": None, "key_thumbprint": None,
                                   "oidc_issuer": None, "oidc_subject": None}
        if isinstance(proof, OwnKeyProof):
            key = import_agent_key(proof.jwk)
            return {**columns, "proof_method": ProofMethod.OWN_KEY.value,
                    "public_jwk": key.jwk, "key_thumbprint": key.thumbprint}
        if isinstance(proof, JwtSvidProof):
            if trust_domain not in self.trust.bundles:
                raise ConfigError(f"no trust bundle is configured for trust domain "
                                  f"`{trust_domain}`, so its JWT-SVIDs cannot be checked")
            return {**columns, "proof_method": ProofMethod.JWT_SVID.value}
        if isinstance(proof, OidcProof):
            issuer = self.trust.issuer_named(proof.issuer)
            subject = proof.subject or issuer.subject_for(name)
            if not subject or len(subject) > 512 or any(ord(c) < 0x20 for c in subject):
                raise RequestError(f"give the OIDC subject: issuer `{issuer.issuer}` has no "
                                   "subject template" if not subject else
                                   "the OIDC subject must be at most 512 printable characters")
            return {**columns, "proof_method": ProofMethod.OIDC.value,
                    "oidc_issuer": issuer.issuer, "oidc_subject": subject}
        raise RequestError("unknown proof method")

    @staticmethod
    def _check_unique(conn: Connection, agent_id: str, columns: dict[str, Any]) -> None:
        if conn.execute(select(agents.c.id).where(agents.c.id == agent_id)).first():
            raise IdentityError("agent_exists", f"agent `{agent_id}` is already registered")
        if columns["key_thumbprint"] is not None:
            holder = conn.execute(select(agents.c.id).where(
                agents.c.key_thumbprint == columns["key_thumbprint"])).scalar()
            if holder is not None:
                raise IdentityError("agent_key_invalid",
                                    f"this key is already registered for agent `{holder}`")
        if columns["oidc_subject"] is not None:
            holder = conn.execute(select(agents.c.id).where(
                agents.c.oidc_issuer == columns["oidc_issuer"],
                agents.c.oidc_subject == columns["oidc_subject"])).scalar()
            if holder is not None:
                raise IdentityError("agent_exists",
                                    f"subject `{columns['oidc_subject']}` is already "
                                       f"registered for agent `{holder}`")

    # manifest and trust state

    def present_manifest(self, agent_id: str, manifest: Manifest, *,
                         attested: bool = False) -> Agent:
        """Record the manifest the agent runs now; a different one makes it ``drifted``.

        A drifted agent stays drifted, even if it goes back to the reviewed
        manifest, until a human reviews it. ``attested`` says the manifest's attested
        fields come from a verified workload token (:mod:`proctor.identity.authentication`):
        only then may it lift ``unattested``. Any other manifest (the agent's own word,
        through the API or the wrapper's file) never does, and for an agent whose platform
        attests fields, those fields are the platform's last word, never the presenter's.
        """
        return self._change(agent_id, lambda agent: self.presenting(agent, manifest,
                                                                    attested=attested))

    def presenting(self, agent: Agent, manifest: Manifest, *,
                   attested: bool = False) -> dict[str, Any] | None:
        """The columns :meth:`present_manifest` changes in ``agent``'s row (None: nothing
        changes), or ``agent_not_active``; what :mod:`proctor.oversight.drifting` writes
        with the drift's event."""
        if not agent.is_active:
            raise AgentError("agent_not_active",
                             f"agent `{agent.id}` is {agent.trust_state.value}")
        presented = manifest if attested else self._platform_fields(agent, manifest)
        if agent.trust_state in (TrustState.TRUSTED, TrustState.UNATTESTED) \
                and presented.digest == agent.manifest_digest:
            if agent.trust_state is TrustState.UNATTESTED and attested:
                return {"trust_state": TrustState.TRUSTED.value, "state_reason": None}
            return None
        if agent.presented_digest == presented.digest:
            return None
        return {"trust_state": TrustState.DRIFTED.value,
                "presented_manifest": presented.as_json(),
                "presented_digest": presented.digest}

    def _platform_fields(self, agent: Agent, manifest: Manifest) -> Manifest:
        """``manifest`` with the fields the platform attests for ``agent`` as it last
        attested them (or as reviewed), whatever the presenter put there."""
        if not self.trust.attested or agent.proof_method is ProofMethod.OWN_KEY:
            return manifest
        running = agent.presented_manifest or agent.manifest
        return replace(manifest, **{name: getattr(running, name) for name in self.trust.attested})

    def review(self, agent_id: str, *, reviewer: str, manifest: Manifest | None = None,
               expected_digest: str | None = None) -> Agent:
        """A human adopts a manifest as reviewed and trusts the agent again.

        Without ``manifest`` the presented one (if any) is adopted, and the review must
        name its digest (``expected_digest``, :attr:`Agent.review_digest` of what the
        reviewer looked at; else ``review_digest_missing``): it fails with
        ``manifest_changed`` unless the manifest being adopted still has that digest,
        so a reviewer never approves something other than what they looked at (an
        agent presenting another manifest in the meantime). A given ``manifest`` is
        what the reviewer names; ``expected_digest`` is checked against it too.
        Reviewing a suspended agent reinstates it; a retired agent cannot be reviewed.
        """
        reviewer = check_review(agent_id, reviewer, manifest, expected_digest)

        def change(agent: Agent) -> dict[str, Any]:
            return reviewed(agent, reviewer=reviewer, manifest=manifest,
                            expected_digest=expected_digest, now=self._clock.now())
        return self._change(agent_id, change)

    def suspend(self, agent_id: str, *, by: str, reason: str = "") -> Agent:
        """Deny the agent everything until a human reviews it; no-op if already suspended.

        The store's change alone (its :meth:`on_deactivated` hooks end the grants in its
        transaction) and no audit event: a human's suspension, with its event in the
        same transaction, is :func:`~proctor.oversight.standing.change_standing`'s."""
        return self._set_state(agent_id, TrustState.SUSPENDED, by, reason)

    def retire(self, agent_id: str, *, by: str, reason: str = "") -> Agent:
        """Deny the agent everything, for good; no-op if already retired. As
        :meth:`suspend`: no audit event (``change_standing`` writes it)."""
        return self._set_state(agent_id, TrustState.RETIRED, by, reason)

    def mark_unattested(self, agent_id: str, reason: str) -> Agent:
        """The platform did not attest a manifest field the deployment requires: the agent
        is ``unattested`` (with ``reason``) until a token attests it or a human reviews it.
        A drifted agent stays drifted (it is already held back)."""
        return self._change(agent_id, lambda agent: self.unattesting(agent, reason))

    def unattesting(self, agent: Agent, reason: str) -> dict[str, Any] | None:
        """The columns :meth:`mark_unattested` changes in ``agent``'s row (None: nothing
        changes), or ``agent_not_active``; what :mod:`proctor.oversight.drifting` writes
        with the ``agent.unattested`` event."""
        if not agent.is_active:
            raise AgentError("agent_not_active",
                             f"agent `{agent.id}` is {agent.trust_state.value}")
        if agent.trust_state is not TrustState.TRUSTED:
            return None
        return {"trust_state": TrustState.UNATTESTED.value, "state_changed_by": "proctor",
                "state_reason": reason[:1000]}

    def set_risk_score(self, agent_id: str, score: int,
                       factors: Sequence[str] | None = None) -> Agent:
        """Record the risk score (0 to 100) that oversight computed and, when given, the
        names of the factors behind it (``principal.risk_factors`` in policy)."""
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
            raise RequestError("a risk score is a whole number from 0 to 100")
        names = None if factors is None else tuple(str(f)[:64] for f in factors)[:16]

        def change(agent: Agent) -> dict[str, Any] | None:
            if agent.risk_score == score and (names is None or agent.risk_factors == names):
                return None
            values: dict[str, Any] = {"risk_score": score}
            if names is not None:
                values["risk_factors"] = list(names)
            return values
        return self._change(agent_id, change)

    def _set_state(self, agent_id: str, state: TrustState, by: str, reason: str) -> Agent:
        by = check_human(by, "actor")
        if len(reason) > 1000:
            raise RequestError("a reason is at most 1000 characters")

        def change(agent: Agent) -> dict[str, Any] | None:
            if agent.trust_state is state:
                return None
            if agent.trust_state is TrustState.RETIRED:
                raise IdentityError("agent_state_invalid",
                                    f"agent `{agent.id}` is retired; retirement is final")
            return {"trust_state": state.value, "state_changed_by": by,
                    "state_reason": reason or None}
        return self._change(agent_id, change)

    def _change(self, agent_id: str, change: _Change) -> Agent:
        key = parse_agent_id(agent_id).id
        after_commit: list[Callable[[], None]] = []
        with self._store.transaction() as conn:
            row = conn.execute(
                select(agents).where(agents.c.id == key).with_for_update()
            ).first()
            if row is None:
                raise AgentError("agent_unknown", f"agent `{key}` is not registered")
            agent = agent_from_row(row)
            values = change(agent)
            if values is None:
                return agent
            conn.execute(update(agents).where(agents.c.id == key)
                         .values(**values, updated_at=self._clock.now()))
            updated = agent_from_row(conn.execute(select(agents).where(agents.c.id == key)).one())
            if agent.is_active and not updated.is_active:
                reason = f"agent {updated.trust_state.value}"
                if updated.state_reason:
                    reason += f": {updated.state_reason}"
                after_commit = [hook(conn, updated, reason) for hook in self._on_deactivated]
        for hook in self._on_changed:
            hook(updated.id)
        for then in after_commit:
            then()
        return updated


def reviewed(agent: Agent, *, reviewer: str, manifest: Manifest | None,
             expected_digest: str | None, now: datetime) -> dict[str, Any]:
    """The columns a review by ``reviewer`` (checked) changes in ``agent``'s row, or the
    refusal: ``agent_state_invalid`` (retired), ``manifest_changed``
    (:meth:`AgentRegistry.review`)."""
    if agent.trust_state is TrustState.RETIRED:
        raise IdentityError("agent_state_invalid",
                            f"agent `{agent.id}` is retired; retirement is final")
    adopted = manifest or agent.presented_manifest or agent.manifest
    if expected_digest is not None and adopted.digest != expected_digest:
        raise IdentityError(
            "manifest_changed", f"the manifest to adopt has digest `{adopted.digest}`, not "
            f"`{expected_digest}`; look at it again"
        )
    still_differs = (agent.presented_digest is not None
                     and agent.presented_digest != adopted.digest)
    return {
        "manifest": adopted.as_json(), "manifest_digest": adopted.digest,
        "trust_state": (TrustState.DRIFTED if still_differs else TrustState.TRUSTED).value,
        "presented_manifest": agent.presented_manifest.as_json()
        if still_differs and agent.presented_manifest else None,
        "presented_digest": agent.presented_digest if still_differs else None,
        "reviewed_by": reviewer, "reviewed_at": now,
        "state_changed_by": reviewer, "state_reason": None,
    }


def check_review(agent_id: str, reviewer: str, manifest: Manifest | None,
                 expected_digest: str | None) -> str:
    """The reviewer's id (a human's: ``reviewer_invalid``), if the review names what it
    adopts (``review_digest_missing``, :meth:`AgentRegistry.review`)."""
    reviewer = check_human(reviewer, "reviewer")
    if manifest is None and not expected_digest:
        raise ReviewUnnamedError(
            f"a review of agent `{agent_id}` names the digest of the manifest it adopts "
            "(the presented one's, as `proctor agent show` gives it)")
    return reviewer
