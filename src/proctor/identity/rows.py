"""Reading an ``agents`` row back as an :class:`~proctor.identity.agent.Agent`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from proctor.human_ids import canonical_human_id
from proctor.identity.agent import Agent, ProofMethod, TrustState
from proctor.identity.agent_key import ALGORITHMS_BY_KEY, AgentKey
from proctor.identity.manifest import Manifest
from proctor.store import as_utc

__all__ = ["agent_from_row"]


def agent_from_row(row: Row[Any]) -> Agent:
    """The agent a row holds; its owner in canonical form even if an older version of
    proctor wrote the row (see :mod:`proctor.human_ids`)."""
    jwk = row.public_jwk
    key = None
    if jwk is not None and row.key_thumbprint is not None:
        algorithms = ALGORITHMS_BY_KEY[(jwk["kty"], jwk["crv"])]
        key = AgentKey(dict(jwk), row.key_thumbprint, algorithms)
    presented = row.presented_manifest
    return Agent(
        id=row.id, name=row.name, trust_domain=row.trust_domain,
        owner=canonical_human_id(row.owner), groups=tuple(row.groups),
        proof_method=ProofMethod(row.proof_method), key=key,
        oidc_issuer=row.oidc_issuer, oidc_subject=row.oidc_subject,
        trust_state=TrustState(row.trust_state), risk_score=int(row.risk_score),
        manifest=Manifest.from_json(row.manifest),
        presented_manifest=Manifest.from_json(presented) if presented is not None else None,
        reviewed_by=row.reviewed_by, reviewed_at=as_utc(row.reviewed_at),
        state_changed_by=row.state_changed_by, state_reason=row.state_reason,
        created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
        risk_factors=tuple(getattr(row, "risk_factors", None) or ()),
    )
