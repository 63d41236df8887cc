"""Agents: register, list, read, review a manifest, suspend, retire; an agent presents
the manifest it runs.

``{agent_id}`` is the agent's SPIFFE ID (``spiffe://acme.example/agent/coder``,
slashes and all) or its bare name in the configured trust domain (``coder``).

Which agents are registered is itself worth knowing (to an attacker choosing whom to
impersonate), so it is told only to a caller who may know it: one who may list agents
or read the agent named. Anyone else gets one answer for an agent that is not registered
and one it may not act on — 404 ``agent_unknown``, the same message — and the refusal
is audited in both cases (:func:`agent_for`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from proctor.codes import Code
from proctor.errors import AgentError, ApiError
from proctor.identity import (
    Agent,
    JwtSvidProof,
    Manifest,
    OidcProof,
    OwnKeyProof,
    ProofSpec,
    TrustState,
    agent_id_for,
)
from proctor.oversight import drifting, trusting
from proctor.oversight.standing import change_standing
from proctor.server.bodies import RequestBody
from proctor.server.control import entity, service
from proctor.server.deps import Call, CallContext
from proctor.server.problems import problem_responses

__all__ = ["AgentView", "ManifestIn", "agent_for", "agent_resource", "router"]

router = APIRouter(tags=["agents"])

Text = Annotated[str, Field(min_length=1, max_length=256)]
Reason = Annotated[str, Field(max_length=1000)]


class ManifestIn(RequestBody):
    """What an agent is made of; digests are ``sha256:`` and 64 lowercase hex digits."""

    model_id: Text
    weights_digest: Text
    system_prompt_digest: Text
    tools: Annotated[list[Text], Field(max_length=1024)]
    dependency_lock_digest: Text

    def manifest(self) -> Manifest:
        return Manifest.from_json(self.model_dump())


class ProofIn(RequestBody):
    """How the agent proves its identity: its own public key (a JWK), JWT-SVIDs of its
    trust domain, or OIDC workload tokens (``subject``, and ``issuer`` if several)."""

    method: Literal["own_key", "jwt_svid", "oidc"]
    jwk: dict[str, Any] | None = None
    subject: Annotated[str, Field(max_length=512)] | None = None
    issuer: Annotated[str, Field(max_length=512)] | None = None

    def spec(self) -> ProofSpec:
        if self.method == "own_key":
            return OwnKeyProof(self.jwk or {})
        if self.method == "jwt_svid":
            return JwtSvidProof()
        return OidcProof(subject=self.subject, issuer=self.issuer)


class RegisterAgent(RequestBody):
    id: Annotated[str, Field(min_length=1, max_length=512,
                             description="SPIFFE ID, or a name in the trust domain")]
    owner: Text
    groups: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]],
                      Field(max_length=64)] = Field(default_factory=list)
    proof: ProofIn
    manifest: ManifestIn


class Review(RequestBody):
    """Adopt ``manifest`` (default: the presented one) as reviewed, if it still has
    ``expected_digest``; without ``manifest`` the review must name it (the agent's
    ``presented_digest``, or its ``manifest_digest`` when it presents none): 400
    ``review_digest_missing``."""

    manifest: ManifestIn | None = None
    expected_digest: Annotated[str, Field(max_length=200)] | None = None


class StateChange(RequestBody):
    reason: Reason = ""


class Presented(RequestBody):
    manifest: ManifestIn


class AgentView(BaseModel):
    id: str
    name: str
    trust_domain: str
    owner: str
    groups: list[str]
    proof_method: str
    public_jwk: dict[str, Any] | None
    key_thumbprint: str | None
    oidc_issuer: str | None
    oidc_subject: str | None
    trust_state: str
    risk_score: int
    manifest: dict[str, Any]
    manifest_digest: str
    presented_manifest: dict[str, Any] | None
    presented_digest: str | None
    manifest_differences: dict[str, Any]
    reviewed_by: str
    reviewed_at: str
    state_changed_by: str | None
    state_reason: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, agent: Agent) -> AgentView:
        return cls(**agent.as_json())


class AgentList(BaseModel):
    agents: list[AgentView]


def agent_for(call: CallContext, agent_id: str, action: str, *,
              context: dict[str, Any] | None = None) -> Agent:
    """The registered agent ``agent_id`` names, once the caller may do ``action`` on it.

    A caller who may know which agents exist (:func:`may_know`) gets 404
    ``agent_unknown`` for an agent that is not registered and 403 ``forbidden``, with
    the policies' reasons, for one it may not act on. Anyone else gets 404
    ``agent_unknown`` for both, with one message, so that status codes do not list the
    registered agents; each is audited as a refusal of ``action``, which also keeps the
    two answers' work alike.
    """
    key = agent_id_for(agent_id, call.runtime.settings.trust_domain).id
    agent = call.runtime.registry.find(key)
    if agent is None:
        if may_know(call, None):
            raise AgentError("agent_unknown", f"agent `{key}` is not registered")
        call.request.state.action = action
        call.state.metrics.refusals.labels(action).inc()
        call.state.control.record_refusal(
            call.principal, action, f'Agent::"{key}"', "agent_unknown",
            ("no agent the caller may see is registered under this id",), source=call.source,
            detail={"method": call.request.method, "path": call.request.url.path[:500]})
        raise _unseen(key)
    try:
        call.require(action, agent_resource(agent), context=context)
    except ApiError as exc:
        if exc.code != "forbidden" or may_know(call, agent):
            raise
        raise _unseen(key) from None
    return agent


def may_know(call: CallContext, agent: Agent | None) -> bool:
    """True if the caller may learn whether ``agent`` is registered: it may list agents,
    or read this one (an agent itself)."""
    control, principal = call.state.control, call.principal
    return control.decide(principal, "api:agent.list", service("agents")).is_allowed or (
        agent is not None
        and control.decide(principal, "api:agent.read", agent_resource(agent)).is_allowed)


def _unseen(key: str) -> AgentError:
    return AgentError("agent_unknown",
                      f"agent `{key}` is not registered, or not one this caller may see")


def agent_resource(agent: Agent) -> dict[str, Any]:
    return entity("Agent", agent.id, roles=["agent"], owner=agent.owner)


_ONE: tuple[Code, ...] = ("agent_unknown", "agent_id_invalid")


@router.get("/v1/agents", responses=problem_responses())
def list_agents(call: Call, state: Annotated[TrustState | None, Query()] = None) -> AgentList:
    """Registered agents, optionally only those in one trust state."""
    call.require("api:agent.list", service("agents"))
    return AgentList(agents=[AgentView.of(a)
                             for a in call.runtime.registry.list_agents(state=state)])


@router.post("/v1/agents", status_code=201, responses=problem_responses(
    "agent_id_invalid", "agent_exists", "agent_key_invalid", "manifest_invalid",
    "reviewer_invalid", "config_invalid", "request_invalid"))
def register_agent(body: RegisterAgent, call: Call) -> AgentView:
    """Register an agent as trusted, its manifest the reviewed one (humans only)."""
    call.require("api:agent.register", service("agents"))
    runtime = call.runtime
    # with its event, in one transaction (an outage: not registered, and 503)
    agent = trusting.register_agent(
        runtime.registry, runtime.audit, runtime.clock,
        agent_id_for(body.id, runtime.settings.trust_domain).id, owner=body.owner,
        proof=body.proof.spec(), manifest=body.manifest.manifest(), groups=body.groups,
        registered_by=call.principal.id, source=call.source)
    runtime.enforcer.refresh_principals()
    return AgentView.of(agent)


@router.get("/v1/agents/{agent_id:path}", responses=problem_responses(*_ONE))
def read_agent(agent_id: str, call: Call) -> AgentView:
    """One agent, with how its presented manifest differs from the reviewed one."""
    return AgentView.of(agent_for(call, agent_id, "api:agent.read"))


@router.post("/v1/agents/{agent_id:path}/review", responses=problem_responses(
    *_ONE, "agent_state_invalid", "manifest_changed", "manifest_invalid", "reviewer_invalid",
    "review_digest_missing"))
def review_agent(agent_id: str, body: Review, call: Call) -> AgentView:
    """Adopt the presented (or given) manifest as reviewed; trust the agent again."""
    agent = agent_for(call, agent_id, "api:agent.review")
    runtime = call.runtime
    # with its event, in one transaction (an outage: nothing changed, and 503)
    updated = trusting.review_agent(
        runtime.registry, runtime.audit, runtime.clock, agent.id, reviewer=call.principal.id,
        manifest=body.manifest.manifest() if body.manifest else None,
        expected_digest=body.expected_digest, source=call.source)
    runtime.enforcer.refresh_principals()
    return AgentView.of(updated)


@router.post("/v1/agents/{agent_id:path}/suspend", responses=problem_responses(
    *_ONE, "agent_state_invalid", "reviewer_invalid"))
def suspend_agent(agent_id: str, body: StateChange, call: Call) -> AgentView:
    """Deny the agent everything until a human reviews it (admins and approvers)."""
    return _set_state(call, agent_id, "suspend", body.reason)


@router.post("/v1/agents/{agent_id:path}/retire", responses=problem_responses(
    *_ONE, "agent_state_invalid", "reviewer_invalid"))
def retire_agent(agent_id: str, body: StateChange, call: Call) -> AgentView:
    """Deny the agent everything, for good."""
    return _set_state(call, agent_id, "retire", body.reason)


def _set_state(call: CallContext, agent_id: str, verb: str, reason: str) -> AgentView:
    agent = agent_for(call, agent_id, f"api:agent.{verb}")
    runtime = call.runtime
    # the change and its event in one transaction (an outage: the change alone, and 503)
    try:
        updated = change_standing(
            runtime.registry, runtime.audit, runtime.clock, runtime.grants.leases, agent.id,
            TrustState.SUSPENDED if verb == "suspend" else TrustState.RETIRED,
            by=call.principal.id, reason=reason, source=call.source)
    finally:  # made alone (503) it stands all the same: the engine learns it either way
        runtime.enforcer.refresh_principals()
    return AgentView.of(updated)


@router.post("/v1/agents/{agent_id:path}/manifest", responses=problem_responses(
    *_ONE, "agent_not_active", "manifest_invalid"))
def present_manifest(agent_id: str, body: Presented, call: Call) -> AgentView:
    """The agent presents the manifest it runs now; a different one makes it drifted."""
    agent = agent_for(call, agent_id, "api:agent.present_manifest")
    runtime = call.runtime
    # a change and its agent.drift event in one transaction (an outage: made alone, 503)
    try:
        updated = drifting.present_manifest(
            runtime.registry, runtime.audit, runtime.clock, agent.id,
            body.manifest.manifest(), actor=call.principal.actor, source=call.source)
    finally:
        runtime.enforcer.refresh_principals()
    return AgentView.of(updated)
