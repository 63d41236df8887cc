"""Grants: issue one for a task, exchange one (delegation), check one, revoke one.

A grant is named by its accessor (``acc_…``) or id (``grant_…``), never by its
token; the token is shown once, in the answer that issues it. Who holds a
grant decides what an agent may do with it: its own, and nothing else. For
an exchange or a check, the holder is read from the token's ``sub`` before
the token is verified; that only decides whether to go on, and a forged
``sub`` then fails verification.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from proctor.audit import AuditEvent, new_event_id
from proctor.codes import Code
from proctor.enforcement import CallMethod
from proctor.errors import DocumentError, GrantError
from proctor.grants import GrantClaims, GrantOffer, GrantScope, HolderProof, IssuedGrant
from proctor.grants.tokens import MAX_TOKEN_BYTES
from proctor.identity import agent_id_for
from proctor.jose import read_compact
from proctor.server.bodies import RequestBody
from proctor.server.control import entity
from proctor.server.deps import Call, CallContext, request_url
from proctor.server.principals import PrincipalKind
from proctor.server.problems import problem_responses
from proctor.server.routes.tasks import task_resource
from proctor.server.state import ServerState
from proctor.store.tables import grants, leases

__all__ = ["ClaimsView", "call_target", "grant_resource", "router", "unverified_holder"]

router = APIRouter(tags=["grants"])

Token = Annotated[str, Field(min_length=1, max_length=8192)]
Proof = Annotated[str, Field(min_length=1, max_length=4096)]
Ttl = Annotated[int, Field(ge=1, le=3600)]
Uses = Annotated[int, Field(ge=1, le=1_000_000)]
ScopeDoc = Annotated[dict[str, Any], Field(description=(
    'A scope: {"tools": [{"tool": "git/git_log", "args": {"repo_path": {"prefix": '
    '["/srv/repos/app"]}}}]}; see docs/grants.md'))]


class IssueGrant(RequestBody):
    task: Annotated[str, Field(min_length=1, max_length=64)]
    scope: ScopeDoc
    ttl_seconds: Ttl | None = None
    max_uses: Uses | None = None
    holder_proof: Proof | None = Field(default=None, description=(
        "A proof (htm `grant/issue`, htu the issuer) signed by the key to bind the grant to; "
        "for an agent with a registered key, that key"))
    identity_proof: Token | None = Field(default=None, description=(
        "For an agent without a registered key: its own identity proof (JWT-SVID or OIDC "
        "token); the holder proof's `ath` is its hash. Defaults to the caller's own bearer "
        "credential when the agent itself calls with it. Anyone else makes an offer."))


class OfferGrant(RequestBody):
    task: Annotated[str, Field(min_length=1, max_length=64)]
    scope: ScopeDoc
    ttl_seconds: Ttl | None = None
    max_uses: Uses | None = None


class RedeemOffer(RequestBody):
    holder_proof: Proof = Field(description=(
        "A proof (htm `grant/issue`, htu the issuer) signed by the key to bind the grant to; "
        "its `ath` is the hash of the identity proof"))
    identity_proof: Token | None = Field(default=None, description=(
        "The agent's own identity proof (JWT-SVID or OIDC token); defaults to the caller's "
        "bearer credential"))


class ExchangeGrant(RequestBody):
    token: Token
    proof: Proof = Field(description="The holder's proof: htm `grant/exchange`, htu the issuer")
    to_agent: Annotated[str, Field(min_length=1, max_length=512)]
    scope: ScopeDoc
    ttl_seconds: Ttl | None = None
    max_uses: Uses | None = None


class CheckGrant(RequestBody):
    """Without ``proof``: is the grant valid now (nothing used). With it: one use of the
    grant for ``tool`` (or none) with ``args``, as an enforcement point would check it:
    the proof made for a call's ``method`` at ``target`` (:func:`call_target`)."""

    token: Token
    proof: Proof | None = None
    method: CallMethod = "tools/call"
    target: Annotated[str, Field(max_length=2048, description=(
        "The URL the agent addressed: this route's own, or one under an enforcement point "
        "of the deployment (server.toml `enforcement_points`); default: this route's"))] \
        | None = None
    tool: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class RevokeGrant(RequestBody):
    reason: Annotated[str, Field(max_length=1000)] = "revoked through the API"


class ClaimsView(BaseModel):
    grant_id: str
    agent: str
    task: str
    expires_at: datetime
    scope: dict[str, Any]
    key_thumbprint: str
    ancestors: list[str]
    actor_chain: list[str]

    @classmethod
    def of(cls, claims: GrantClaims) -> ClaimsView:
        return cls(grant_id=claims.grant_id, agent=claims.agent_id, task=claims.task_id,
                   expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
                   scope=claims.scope.as_json(), key_thumbprint=claims.key_thumbprint,
                   ancestors=list(claims.ancestors), actor_chain=list(claims.actor_chain))


class GrantIssued(ClaimsView):
    kind: Literal["grant"] = "grant"
    token: str = Field(description="Give it to the agent only; proctor keeps just its hash")
    accessor: str

    @classmethod
    def issued(cls, grant: IssuedGrant) -> GrantIssued:
        return cls(token=grant.token, accessor=grant.accessor,
                   **ClaimsView.of(grant.claims).model_dump())


class GrantOffered(BaseModel):
    """A grant decided for an agent without a registered key: only that agent can redeem
    it (``POST /v1/grants/offers/{offer}/redeem``), binding it to a key it proves."""

    kind: Literal["offer"] = "offer"
    offer: str
    agent: str
    task: str
    scope: dict[str, Any]
    max_uses: int | None
    actor_chain: list[str]
    redeem_by: datetime
    expires_at: datetime

    @classmethod
    def of(cls, offer: GrantOffer) -> GrantOffered:
        return cls(offer=offer.id, agent=offer.agent_id, task=offer.task_id,
                   scope=offer.scope.as_json(), max_uses=offer.max_uses,
                   actor_chain=list(offer.actor_chain), redeem_by=offer.redeem_by,
                   expires_at=offer.expires_at)


Made = Annotated[GrantIssued | GrantOffered, Field(discriminator="kind")]


class CheckResult(BaseModel):
    valid: bool
    code: str
    reason: str
    grant: ClaimsView | None = None
    uses_left: int | None = None


class Revoked(BaseModel):
    grant: str
    revoked: list[str]


_ISSUE: tuple[Code, ...] = (
    "task_unknown", "task_ended", "scope_invalid", "grant_ttl_invalid",
    "grant_max_uses_invalid", "issuance_denied", "issuance_pending_approval",
    "agent_not_active", "proof_missing", "proof_invalid", "proof_stale",
    "proof_replayed", "proof_wrong_key", "proof_wrong_target", "proof_key_private",
    "grant_revoked", "holder_identity_missing", "holder_identity_invalid",
    "holder_identity_mismatch", "task_expired", "task_idle")
_OFFER: tuple[Code, ...] = (
    "task_unknown", "task_ended", "task_expired", "task_idle", "scope_invalid",
    "grant_ttl_invalid", "grant_max_uses_invalid", "issuance_denied",
    "issuance_pending_approval", "agent_not_active", "grant_revoked")
_REDEEM: tuple[Code, ...] = (
    "offer_unknown", "offer_redeemed", "offer_expired", "offer_cancelled",
    "holder_identity_missing", "holder_identity_invalid", "holder_identity_mismatch",
    "proof_missing", "proof_invalid", "proof_stale", "proof_replayed", "proof_wrong_key",
    "proof_wrong_target", "proof_key_private", "agent_not_active", "task_ended",
    "task_expired", "task_idle", "issuance_denied", "issuance_pending_approval",
    "grant_revoked", "delegation_widens_uses", "grant_uses_exhausted", "grant_ttl_invalid",
    # an exchange's offer: the delegator no longer holds its grant as it did, or changed
    "grant_manifest_changed", "grant_wrong_agent", "agent_changed")


@router.post("/v1/grants", status_code=201, responses=problem_responses(*_ISSUE))
def issue_grant(body: IssueGrant, call: Call) -> GrantIssued:
    """Issue a grant for a task's agent, if policy allows each tool of the scope."""
    runtime = call.runtime
    task = runtime.grants.task(body.task)
    call.require("api:grant.issue", task_resource(task))
    holder = None
    if body.holder_proof is not None:
        identity = body.identity_proof or _own_identity(call, task.agent_id)
        holder = HolderProof(body.holder_proof, identity)
    issued = runtime.grants.issue(task.id, GrantScope.from_request(body.scope),
                                  ttl_seconds=body.ttl_seconds, max_uses=body.max_uses,
                                  holder=holder, requested=_asked(call, "grant.issue"))
    return GrantIssued.issued(issued)


@router.post("/v1/grants/offers", status_code=201, responses=problem_responses(*_OFFER))
def offer_grant(body: OfferGrant, call: Call) -> GrantOffered:
    """Decide a grant for a task's agent now; the agent redeems it with its own identity
    proof and a proof of the key to bind it to (the way to give an agent without a
    registered key a grant)."""
    runtime = call.runtime
    task = runtime.grants.task(body.task)
    call.require("api:grant.issue", task_resource(task))
    offer = runtime.grants.offer(task.id, GrantScope.from_request(body.scope),
                                 ttl_seconds=body.ttl_seconds, max_uses=body.max_uses,
                                 requested=_asked(call, "grant.issue"))
    return GrantOffered.of(offer)


def _asked(call: CallContext, action: str) -> AuditEvent | None:
    """A human caller's event of the grant or offer they asked for, written with it
    (the issuer names what was made); None for an agent, whose own request is on the
    record as the issuance's decisions."""
    if call.principal.kind is not PrincipalKind.HUMAN:
        return None
    now = call.runtime.clock.now()
    return AuditEvent(id=new_event_id(now), time=now, actor=call.principal.actor,
                      action=action, target="", outcome="", source=call.source)


@router.post("/v1/grants/offers/{offer}/redeem", status_code=201,
             responses=problem_responses(*_REDEEM))
def redeem_offer(offer: Annotated[str, Path(max_length=64, description="the offer id")],
                 body: RedeemOffer, call: Call) -> GrantIssued:
    """Redeem an offer, as the agent it names: the grant is bound to the key the holder
    proof proves, tied to the agent's own identity proof."""
    runtime = call.runtime
    found = runtime.grants.offer_of(offer)
    call.require("api:grant.redeem", entity("Grant", found.id, agent=("Agent", found.agent_id),
                                            task=found.task_id))
    identity = body.identity_proof or _own_identity(call, found.agent_id)
    issued = runtime.grants.redeem(found.id, HolderProof(body.holder_proof, identity))
    return GrantIssued.issued(issued)


def _own_identity(call: CallContext, agent_id: str) -> str | None:
    """The caller's bearer credential, when the caller is ``agent_id`` itself and
    authenticated with its identity proof (not with a grant)."""
    principal = call.principal
    if principal.kind is not PrincipalKind.AGENT or principal.id != agent_id \
            or principal.method == "grant":
        return None
    scheme, _, value = call.request.headers.get("authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@router.post("/v1/grants/exchange", status_code=201, responses=problem_responses(
    *_ISSUE, "grant_malformed", "grant_too_large", "grant_expired", "grant_signature_invalid",
    "grant_unknown_key", "grant_wrong_issuer", "grant_wrong_audience", "grant_wrong_agent",
    "grant_not_yet_valid", "grant_algorithm_not_allowed", "grant_uses_exhausted",
    "agent_id_invalid", "delegation_widens_scope", "delegation_extends_expiry",
    "delegation_too_deep", "delegation_cycle", "delegation_widens_uses", "proof_stale"))
def exchange_grant(body: ExchangeGrant, call: Call) -> Made:
    """Delegation: trade a grant (with the holder's proof) for a narrower one for another
    agent; each hand-off is a policy decision of its own. An agent without a registered
    key gets an offer (``kind: offer``) that only it can redeem."""
    holder = unverified_holder(body.token)
    call.require("api:grant.exchange", grant_resource(holder))
    runtime = call.runtime
    to_agent = agent_id_for(body.to_agent, runtime.settings.trust_domain).id
    made = runtime.grants.exchange(
        body.token, body.proof, to_agent=to_agent, scope=GrantScope.from_request(body.scope),
        ttl_seconds=body.ttl_seconds, max_uses=body.max_uses,
        requested=_asked(call, "grant.exchange"))
    if isinstance(made, GrantOffer):
        return GrantOffered.of(made)
    return GrantIssued.issued(made)


@router.post("/v1/grants/check", responses=problem_responses("proof_target_unknown"))
def check_grant(body: CheckGrant, call: Call) -> CheckResult:
    """Whether a grant is valid (without ``proof``), or one use of it passes (with it).
    A failed check is an answer (``valid: false`` and the code), not an error."""
    holder = unverified_holder(body.token)
    call.require("api:grant.check", grant_resource(holder))
    authority = call.runtime.grants
    target = call_target(call.request, call.state, body.target)
    try:
        if body.proof is None:
            inspected = authority.inspect(body.token)
            claims, uses_left = inspected.claims, inspected.uses_left
        else:
            checked = authority.check(body.token, body.proof, method=body.method,
                                      target=target, tool_id=body.tool, args=body.args)
            claims, uses_left = checked.claims, checked.uses_left
    except GrantError as exc:
        return CheckResult(valid=False, code=exc.code, reason=exc.message)
    return CheckResult(valid=True, code="valid", reason="every check passed",
                       grant=ClaimsView.of(claims), uses_left=uses_left)


@router.post("/v1/grants/{grant}/revoke", responses=problem_responses("grant_unknown"))
def revoke_grant(grant: Annotated[str, Path(max_length=128, description="accessor or id")],
                 call: Call, body: RevokeGrant | None = None) -> Revoked:
    """Revoke a grant and everything derived from it (an agent: only its own)."""
    found = _held(call, grant)
    call.require("api:grant.revoke", grant_resource(found))
    reason = body.reason if body is not None else RevokeGrant().reason
    revoked = call.runtime.grants.revoke(found["id"], reason, by=call.principal.actor)
    return Revoked(grant=found["accessor"], revoked=revoked)


def unverified_holder(token: str) -> dict[str, str]:
    """The grant's id, holder and task as its token says, before any check; a token
    that does not even say is held by nobody (so no agent may use it)."""
    try:
        claims = read_compact(token, max_bytes=MAX_TOKEN_BYTES, what="the grant").claims
        return {"id": str(claims["jti"])[:128], "agent": str(claims["sub"])[:512],
                "task": str(claims["task"])[:64], "accessor": ""}
    except (DocumentError, KeyError):
        return {"id": "unknown", "agent": "", "task": "", "accessor": ""}


def call_target(request: Request, state: ServerState, target: str | None) -> str:
    """The URL a call's proof must name (its ``htu``): ``target`` if it is this route's
    own URL or one at or under an enforcement point the deployment configured
    (``enforcement_points``); this route's own URL if ``target`` is None. Anything else
    is refused (``proof_target_unknown``): a caller naming any URL could spend there a
    proof the agent made for another party."""
    own = request_url(request, state)
    if target is None or target == own:
        return own
    for point in state.config.enforcement_points:
        if target == point or target.startswith(point + "/"):
            return target
    raise GrantError("proof_target_unknown", f"target `{target[:200]}` is not an enforcement "
                     "point of this deployment: name it in server.toml's `enforcement_points`, "
                     "or leave target out for this route's own URL")


def grant_resource(holder: dict[str, str]) -> dict[str, Any]:
    return entity("Grant", holder["id"], agent=("Agent", holder["agent"]), task=holder["task"])


def _held(call: CallContext, grant: str) -> dict[str, str]:
    query = (select(grants.c.id, grants.c.accessor, leases.c.agent_id, leases.c.task_id)
             .join(leases, leases.c.id == grants.c.id)
             .where((grants.c.id == grant) | (grants.c.accessor == grant)))
    with call.runtime.store.reading() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise GrantError("grant_unknown", f"grant `{grant[:80]}` does not exist: name it by "
                         "its accessor or id")
    return {"id": row.id, "accessor": row.accessor, "agent": row.agent_id, "task": row.task_id}
