"""Who is calling: the ``Authorization`` header, checked.

Schemes::

    Authorization: Bearer ptk_…             a human's API token (the admin token is one)
    Authorization: Bearer <JWT>              a human's OIDC token, when its issuer and
                                             audience are a configured human issuer;
                                             otherwise an agent's workload proof
                                             (own-key JWS, JWT-SVID, OIDC workload token)
    Authorization: DPoP <grant>              an agent's grant, with
    DPoP: <proof>                            a fresh proof for this request (RFC 9449:
                                             htm = the method, htu = the URL without query)

An agent's **own-key proof** names its request (``htm``, ``htu``, ``bh``: the method,
the URL as ``public_url`` + path, the body's hash) and is taken once, by any process
(:mod:`proctor.identity.request_proofs`): its ``jti`` is claimed in the store, in the
table of proofs of possession's nonces. One exception: ``POST /v1/decide``
(``single_use_body``), whose body carries a proof of possession of the same key
(a grant of an agent with a key is bound to that key, and the caller must be the
grant's agent), which the decision's own write claims. The identity proof is bound to
that body, so it is taken once with it, and the decision costs no second write. A
proof presented outside its request (``proof_unbound``: made before proofs were
bound; ``proof_wrong_request``; ``proof_replayed``) is refused and audited: its
signature verified, so it is the agent's, presented by someone (actor
``unauthenticated``, target the agent).

A **workload token** (JWT-SVID, OIDC) is a bearer credential by its issuer's design: a
verified one is remembered until it expires, but at most :data:`REVERIFY_SECONDS`, so
an agent can reuse one for many requests; then it is verified again, against the keys
its issuer trusts now (a JWT-SVID or workload token may live hours, and a key the trust
domain withdrew must stop signing agents in). The agent's state and key are still read
from the store on every request, so a suspension or a key change takes effect at once.
A route whose own work confirms the agent in its write (``POST /v1/decide``: the
decision's transaction confirms the agent, its grant and its task) asks with
``confirmed_later``: the agent's state and key then come from the process's agent view
(memory while the change feed is current, the store otherwise), with no read of its own.

Any failure is a 401 with the specific code (``proof_expired``,
``grant_revoked``, ``api_token_invalid``, …).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from proctor.audit import Actor, ActorType, AuditEvent, AuditLog, DecisionRecord, new_event_id
from proctor.clock import Clock
from proctor.codes import Code
from proctor.errors import (
    ApiError,
    AuditError,
    GrantError,
    IdentityError,
    ProctorError,
    StoreError,
)
from proctor.grants import PROOF_ALGORITHMS, AgentDirectory, GrantAuthority
from proctor.identity import (
    Agent,
    AgentRegistry,
    AgentView,
    Attestation,
    Authenticator,
    ProofMethod,
    parse_agent_id,
)
from proctor.identity.humans import HumanVerifier
from proctor.identity.request_proofs import BoundRequest
from proctor.identity.tokens import peek
from proctor.jose import UnverifiedJws
from proctor.server.principals import Principal, PrincipalKind
from proctor.server.tokens import TOKEN_PREFIX, ApiTokens

__all__ = ["MAX_CREDENTIAL_BYTES", "RequestAuthenticator"]

log = logging.getLogger(__name__)

MAX_CREDENTIAL_BYTES = 16 * 1024
CHALLENGE = f'Bearer realm="proctor", DPoP realm="proctor" algs="{" ".join(PROOF_ALGORITHMS)}"'
_CACHE_SIZE = 10_000
AGENT_ROLES = frozenset({"agent"})
# the longest a verified workload proof is taken without verifying it again
REVERIFY_SECONDS = 60
# refusals of an own-key proof whose signature verified: the agent's own proof, presented
# outside the request it was signed for (an old SDK's reusable one, or a captured one)
_AUDITED: frozenset[str] = frozenset({"proof_unbound", "proof_wrong_request", "proof_replayed"})
_UNAUTHENTICATED = Actor(ActorType.SYSTEM, "unauthenticated")


@dataclass(frozen=True, slots=True)
class _Remembered:
    agent_id: str
    owner: str
    method: str
    expires_at: datetime  # the proof's, or sooner: when it is verified again
    key_thumbprint: str | None


def unauthenticated(code: Code, detail: str) -> ApiError:
    return ApiError(code, detail, status=401, headers={"WWW-Authenticate": CHALLENGE})


class RequestAuthenticator:
    """Turns a request's credentials into a :class:`Principal`, or a 401 problem."""

    def __init__(self, *, tokens: ApiTokens, humans: HumanVerifier, registry: AgentRegistry,
                 directory: AgentDirectory, grants: GrantAuthority, clock: Clock,
                 view: AgentView | None = None, audit: AuditLog | None = None,
                 attest: Callable[[Attestation], Agent] | None = None) -> None:
        self._tokens = tokens
        self._humans = humans
        self._registry = registry
        self._agents = Authenticator(registry, clock=clock, attest=attest)
        # for a route whose write confirms the agent: agents as this process's view has them
        self._seen = self._agents if view is None else Authenticator(
            registry, clock=clock, attest=attest, agents=view)
        self._audit = audit
        self._directory = directory
        self._view = view
        self._grants = grants
        self._clock = clock
        self._remembered: dict[str, _Remembered] = {}
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def authenticate(self, headers: Mapping[str, str], *, method: str, url: str,
                     body: bytes | None = None, source: str | None = None,
                     confirmed_later: bool = False, single_use_body: bool = False
                     ) -> Principal:
        """The caller; ``url`` is this request's URL as DPoP proofs name it, ``body`` its
        body as received (None: not known, and no own-key proof is taken), ``source``
        the client's address (for the audit of a refused own-key proof).
        ``confirmed_later``: the route confirms an agent caller's state in its own
        write, so the agent is looked up in the agent view. ``single_use_body``: the
        body carries a single-use proof of possession of the agent's key that the
        route's write claims, so an own-key proof bound to it is not claimed apart."""
        header = headers.get("authorization")
        if not header:
            raise unauthenticated("credentials_missing", "this operation needs credentials: "
                                  "an `Authorization` header")
        if len(header) > MAX_CREDENTIAL_BYTES:
            raise unauthenticated("credentials_malformed", "the credentials are too large")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if not value or " " in value:
            raise unauthenticated("credentials_malformed",
                                  "the `Authorization` header is `<scheme> <credentials>`")
        try:
            if scheme.lower() == "bearer":
                request = BoundRequest(method, url, body)
                return self._bearer(value, request, source, confirmed_later, single_use_body)
            if scheme.lower() == "dpop":
                return self._grant(value, headers.get("dpop", ""), method, url)
        except StoreError:
            raise
        except ProctorError as exc:
            raise unauthenticated(exc.code, exc.message) from exc
        raise unauthenticated("credentials_malformed",
                              f"scheme `{scheme[:20]}` is not accepted (use Bearer or DPoP)")

    def _bearer(self, value: str, request: BoundRequest, source: str | None,
                confirmed_later: bool, single_use_body: bool) -> Principal:
        if value.startswith(TOKEN_PREFIX):
            token = self._tokens.verify(value)
            if token is None:
                raise unauthenticated("api_token_invalid",
                                      "the API token is unknown, revoked or expired")
            refused = self.human_refusal(token.human_id, "api_token")
            if refused is not None:
                raise refused
            return Principal(PrincipalKind.HUMAN, token.human_id, token.roles, "api_token",
                             credential=token.id)
        read = peek(value)
        claims = read.claims
        if self._humans.accepts(claims):
            human = self._humans.verify(value, now=self._clock.now())
            agent = self._workload_agent(claims)
            if agent is not None:
                raise unauthenticated("proof_claims_invalid", f"the token is the workload "
                                      f"token of agent `{agent}`: agents never sign in as "
                                      "humans")
            return Principal(PrincipalKind.HUMAN, human.id, human.roles, "oidc")
        return self._workload(value, read, request, source, confirmed_later, single_use_body)

    def human_refusal(self, human_id: str, method: str) -> ApiError | None:
        """The 401 for the human ``human_id`` signed in with ``method`` (``api_token`` or
        ``oidc``) if today's sign-in rules refuse them
        (:meth:`~proctor.identity.humans.HumanVerifier.signed_in_refusal`), else None.
        Asked at each use of an API token here, and at each request of a console
        session (``server/console/web.py``): one check, so that a session opened before
        a rule (an issuer's ``id_domains``, the bootstrap admin's reserved id) ends
        when the API would refuse its human."""
        refusal = self._humans.signed_in_refusal(human_id, method)
        if refusal is None:
            return None
        if method == "api_token":
            return unauthenticated("api_token_invalid", f"{refusal}: the API token names no "
                                   "person of the human issuers")
        return unauthenticated("proof_claims_invalid", refusal)

    def _workload_agent(self, claims: Mapping[str, Any]) -> str | None:
        """The agent registered for the subject of a verified token whose issuer is also
        an issuer of agents' workload tokens (one provider for people and workloads):
        such a token is that agent's, never a human's sign-in. None for any other."""
        issuer = self._registry.trust.issuers.get(str(claims.get("iss")))
        subject = claims.get(issuer.subject_claim) if issuer is not None else None
        if issuer is None or not isinstance(subject, str):
            return None
        agent = self._registry.find_by_subject(issuer.issuer, subject)
        return agent.id if agent is not None else None

    def _workload(self, token: str, read: UnverifiedJws, request: BoundRequest,
                  source: str | None, confirmed_later: bool,
                  single_use_body: bool) -> Principal:
        remembered = self._remembered.get(token)
        if remembered is not None and self._still_good(remembered, confirmed_later):
            return self._agent(remembered)
        authenticator = self._seen if confirmed_later else self._agents
        try:
            found = authenticator.authenticate(token, request=request, read=read)
            agent, identity = found.agent, found.identity
            if identity.method is ProofMethod.OWN_KEY:  # bound to this request, used once
                if identity.use is None:  # the authenticator always checks it: never reused
                    raise IdentityError("proof_unbound", "the own-key proof was not checked "
                                        "against its request")
                if not single_use_body:  # `proof_replayed` if its jti was taken before
                    self._grants.claim_identity_proof(identity.use)
                return Principal(PrincipalKind.AGENT, agent.id, AGENT_ROLES,
                                 identity.method.value, owner=agent.owner)
        except (IdentityError, GrantError) as exc:
            if exc.code in _AUDITED:  # raised once the signature verified: `sub` is the agent
                self._record_refusal(read.claims.get("sub"), exc, request, source)
            raise
        until = min(identity.expires_at,
                    self._clock.now() + timedelta(seconds=REVERIFY_SECONDS))
        remembered = _Remembered(agent.id, agent.owner, identity.method.value, until,
                                 agent.key_thumbprint)
        with self._lock:
            if len(self._remembered) >= _CACHE_SIZE:
                self._remembered.clear()
            self._remembered[token] = remembered
        return self._agent(remembered)

    def _record_refusal(self, subject: object, exc: ProctorError, request: BoundRequest,
                        source: str | None) -> None:
        """Audit a refused own-key proof of the agent ``subject``: its own proof, presented
        by someone unknown (the actor is not the agent: it proved nothing now)."""
        if self._audit is None or not isinstance(subject, str):
            return
        agent_id = parse_agent_id(subject).id
        now = self._clock.now()
        path = urlsplit(request.url).path[:500]
        try:
            self._audit.record(AuditEvent(
                id=new_event_id(now), time=now, actor=_UNAUTHENTICATED,
                action="api:authenticate", target=f'Agent::"{agent_id}"',
                outcome="refused", source=source,
                decision=DecisionRecord("deny", exc.code, (), None, (exc.message,)),
                detail={"agent": agent_id, "proof": "own_key", "method": request.method[:20],
                        "path": path}))
        except AuditError:
            log.error("a refused identity proof of `%s` could not be audited", agent_id)

    def _still_good(self, remembered: _Remembered, confirmed_later: bool) -> bool:
        if self._clock.now() >= remembered.expires_at:
            return False
        if confirmed_later and self._view is not None:
            agent = self._view.find(remembered.agent_id)
            return (agent is not None and agent.is_active
                    and agent.key_thumbprint == remembered.key_thumbprint)
        binding = self._directory.binding(remembered.agent_id)
        return (binding is not None and binding.is_active
                and binding.key_thumbprint == remembered.key_thumbprint)

    @staticmethod
    def _agent(remembered: _Remembered) -> Principal:
        return Principal(PrincipalKind.AGENT, remembered.agent_id, AGENT_ROLES,
                         remembered.method, owner=remembered.owner)

    def _grant(self, token: str, proof: str, method: str, url: str) -> Principal:
        checked = self._grants.check(token, proof, method=method, target=url, tool_id=None,
                                     args=None)
        claims = checked.claims
        return Principal(PrincipalKind.AGENT, claims.agent_id, AGENT_ROLES, "grant",
                         owner=self._owner(claims.agent_id), credential=claims.grant_id)

    def _owner(self, agent_id: str) -> str:
        """An agent's owner; owners never change, so this is read once per agent."""
        owner = self._owners.get(agent_id)
        if owner is None:
            owner = self._registry.get(agent_id).owner
            with self._lock:
                if len(self._owners) >= _CACHE_SIZE:
                    self._owners.clear()
                self._owners[agent_id] = owner
        return owner
