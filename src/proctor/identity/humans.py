"""Humans signing in with an OIDC provider's tokens (ID or access tokens).

The token is checked as agents' workload tokens are, by the one OIDC verifier
(:class:`~proctor.identity.oidc.OidcTokenVerifier`): a configured issuer, its
audience, an algorithm from its allow-list that fits the key its ``kid`` names,
the signature and the times. The keys come from a JWKS file, or from the
issuer's JWKS URL, and are loaded again as :class:`~proctor.identity.jwks.Refreshing`
says (every five minutes, and for a key id not seen yet at most every 30 s).

The human's id is one claim (``sub`` by default; ``email`` is common) and the
roles come from another (``roles`` by default), mapped to proctor's roles. An id
that is a SPIFFE ID is refused: agents never sign in as humans; so is one the
provider says it has not verified (``email_verified: false`` for ``email``); so is an
application's token (:func:`workload_sign`: Entra ``idtyp: app``, a client-credentials
token whose ``sub`` is its client's id, Keycloak's service accounts), and, with
``human_claim`` set, a token without that claim. A
token with several audiences is taken only if it was issued to proctor (its ``azp``
is proctor's audience, OIDC Core 3.1.3.7): another client the provider lists beside
proctor in ``aud`` would otherwise sign in as its human, with their roles. The id is
scoped by issuer where several are configured (each declares the email domains its
ids are in, ``id_domains``, and no domain is two issuers': :func:`check_human_issuers`)
and taken in its canonical form (:mod:`proctor.human_ids`): ``Bob@Acme.example`` signs in as
``bob@acme.example``, and an id with invisible characters or mixed scripts is
refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from proctor.clock import Clock
from proctor.errors import ConfigError, IdentityError
from proctor.human_ids import canonical_human_id, human_id_problem
from proctor.identity.oidc import OidcIssuer, OidcTokenVerifier, issuer_settings
from proctor.identity.people import SYSTEM_PREFIX

__all__ = ["BOOTSTRAP_ADMIN", "HUMAN_ROLES", "LEEWAY_SECONDS", "HumanIssuer", "HumanVerifier",
           "VerifiedHuman", "check_human_issuers", "domains_refusal", "issuer_from_config",
           "person_refusal", "workload_sign"]

HUMAN_ROLES = ("admin", "approver", "auditor")
# the human ``proctor init``'s admin token names (:meth:`ApiTokens.ensure_admin`): that
# token's alone. No provider's sign-in takes it: a person the provider calls so would act,
# in the audit log, in approvals and in every id compared, as the bootstrap admin
BOOTSTRAP_ADMIN = "local-admin"
LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class HumanIssuer(OidcIssuer):
    """An OIDC provider whose tokens sign humans in, and how its claims map to roles."""

    role_claim: str = "roles"
    roles: Mapping[str, str] = field(default_factory=lambda: {r: r for r in HUMAN_ROLES})
    human_claim: str | None = None  # a claim only humans' tokens carry (`email`, `upn`)
    id_domains: tuple[str, ...] = ()  # the email domains this issuer's ids may be in

    def __post_init__(self) -> None:
        OidcIssuer.__post_init__(self)
        object.__setattr__(self, "id_domains",
                           tuple(d.strip().lower() for d in self.id_domains))
        if any(not d or "@" in d for d in self.id_domains):
            raise ConfigError(f"OIDC issuer `{self.issuer}`: `id_domains` are domains "
                              "(`acme.example`)")
        unknown = sorted(set(self.roles) - set(HUMAN_ROLES))
        if unknown:
            raise ConfigError(f"OIDC issuer `{self.issuer}`: `{unknown[0]}` is not a role "
                              f"(roles: {', '.join(HUMAN_ROLES)})")

    def roles_in(self, claims: Mapping[str, Any]) -> frozenset[str]:
        """The proctor roles ``claims`` give: a role whose claim value is present."""
        value = claims.get(self.role_claim)
        values = value.split() if isinstance(value, str) else value if isinstance(
            value, list) else []
        present = {v for v in values if isinstance(v, str)}
        return frozenset(role for role, wanted in self.roles.items() if wanted in present)


@dataclass(frozen=True, slots=True)
class VerifiedHuman:
    id: str
    roles: frozenset[str]
    issuer: str
    expires_at: datetime


class HumanVerifier:
    """Checks humans' OIDC tokens against the configured issuers."""

    def __init__(self, issuers: Iterable[HumanIssuer], *,
                 leeway_seconds: int = LEEWAY_SECONDS) -> None:
        issuers = tuple(issuers)
        check_human_issuers(issuers)
        self._issuers = issuers
        self._tokens = OidcTokenVerifier(issuers, leeway_seconds=leeway_seconds)

    def signed_in_refusal(self, human_id: str, method: str) -> str | None:
        """Why the human ``human_id`` (canonical), signed in with ``method``
        (``api_token``, or a provider's token: ``oidc``), may not act now, or None: the
        rules of today's sign-in on the id alone. An API token's human by
        :meth:`token_refusal`; a provider's person by :func:`person_refusal`, the issuers'
        ``id_domains`` (:func:`domains_refusal`), and a provider configured at all. The
        server asks it at each use of an API token (a provider's token is verified whole
        at each use, by the same rules), and the console at each request of a session,
        however long ago it was opened (``server/authentication.py``
        ``RequestAuthenticator.human_refusal``)."""
        if method == "api_token":
            return self.token_refusal(human_id)
        if not self._issuers:
            return "no OIDC issuer signs humans in now"
        return person_refusal(human_id) or domains_refusal(human_id, self._issuers)

    def token_refusal(self, human_id: str) -> str | None:
        """Why an API token naming ``human_id`` (canonical) may not sign in, or None:
        a human outside the issuers' ``id_domains`` (:func:`domains_refusal`), checked at
        each use, whoever made the token and whenever (before the domains were set, or
        by a library caller), so that one id stays one person. The bootstrap admin's
        token (:data:`BOOTSTRAP_ADMIN`) is no provider's person, and always signs in."""
        if human_id == BOOTSTRAP_ADMIN:
            return None
        return domains_refusal(human_id, self._issuers)

    def accepts(self, claims: Mapping[str, Any]) -> bool:
        """True if ``claims`` (unverified) name a human issuer and its audience: such a
        token is checked here, any other goes to the agents' verifiers."""
        issuer = self._tokens.issuer_of(claims)
        return issuer is not None and issuer.names_audience(claims)

    def verify(self, token: str, *, now: datetime) -> VerifiedHuman:
        verified = self._tokens.verify(token, now=now)
        issuer, subject = verified.issuer, verified.subject
        _check_authorized_party(verified.claims, issuer.audience)
        _check_verified(verified.claims, issuer.subject_claim)
        problem = human_id_problem(subject)
        if problem is not None:
            raise IdentityError("proof_claims_invalid",
                                f"the token's `{issuer.subject_claim}` claim {problem}")
        _check_a_person(verified.claims, issuer.human_claim)
        human_id = canonical_human_id(str(subject))
        refusal = person_refusal(human_id)
        if refusal is not None:
            raise IdentityError("proof_claims_invalid", refusal)
        if issuer.id_domains and not _in_domains(human_id, issuer.id_domains):
            raise IdentityError("proof_claims_invalid",
                                f"issuer `{issuer.issuer}` names people of "
                                f"{', '.join(issuer.id_domains)} only (`id_domains`)")
        return VerifiedHuman(human_id, issuer.roles_in(verified.claims), issuer.issuer,
                             verified.expires_at)


# The claims that name the client (the OAuth client that asked for the token) in the
# providers' tokens: RFC 9068 and Keycloak `client_id`, Okta `cid`, Entra v1 `appid`,
# Entra v2 and OIDC `azp`, older Keycloak `clientId`.
_CLIENT_CLAIMS = ("client_id", "cid", "appid", "azp", "clientId")


def workload_sign(claims: Mapping[str, Any]) -> str | None:
    """What in ``claims`` says the token is an application's, not a person's, if anything:
    Entra's ``idtyp: app`` (an app-only token), Auth0's ``gty: client-credentials``, a
    ``sub`` that is the client's own id (the client-credentials grant: RFC 9068 2.2, Okta,
    Auth0, Entra's ``azp``/``appid``), or Keycloak's service-account user
    (``preferred_username`` ``service-account-...``). None for a person's token."""
    if claims.get("idtyp") == "app":
        return "`idtyp` is `app`"
    if claims.get("gty") == "client-credentials":
        return "`gty` is `client-credentials`"
    subject = claims.get("sub")
    for name in _CLIENT_CLAIMS:
        if isinstance(subject, str) and subject and claims.get(name) == subject:
            return f"its `sub` is the client's own id (`{name}`)"
    username = claims.get("preferred_username")
    if isinstance(username, str) and username.startswith("service-account-"):
        return "it is a service account's (`preferred_username`)"
    return None


def _check_a_person(claims: Mapping[str, Any], human_claim: str | None) -> None:
    """Refuse an application's token (client credentials, a workload's app role): one
    provider often serves people and workloads with one audience, and a workload token
    would sign in as a human named by the client's id, with the roles the provider gave
    the application (an approver, an admin). With ``human_claim`` set, a token without
    that claim (or with it empty or false) is not a person's either."""
    sign = workload_sign(claims)
    if sign is not None:
        raise IdentityError("proof_claims_invalid",
                            f"the token is an application's ({sign}), not a person's; "
                            "workloads sign in as agents")
    if human_claim is not None and claims.get(human_claim) in (None, "", False, [], "false"):
        raise IdentityError("proof_claims_invalid",
                            f"the token has no `{human_claim}` claim, which every person's "
                            "token of this issuer carries: it is not a person's")


def _in_domains(human_id: str, domains: Iterable[str]) -> bool:
    """Whether the canonical ``human_id`` is an address (``local@domain``, both parts)
    in one of ``domains``: an id without ``@`` would have all of itself as its domain."""
    local, at, domain = human_id.rpartition("@")
    return bool(local and at) and domain in set(domains)


def person_refusal(human_id: str) -> str | None:
    """Why the canonical ``human_id`` a provider's token names is no person it may sign
    in, or None: an agent's SPIFFE ID (agents never sign in as humans), the system's
    (their actions would be the system's), or the bootstrap admin's
    (:data:`BOOTSTRAP_ADMIN`: that token's alone)."""
    if human_id.startswith("spiffe://"):
        return "the token names an agent; humans sign in here"
    if human_id.startswith(SYSTEM_PREFIX):
        return "the token names the system; humans sign in here"
    if human_id == BOOTSTRAP_ADMIN:
        return (f"the token names `{BOOTSTRAP_ADMIN}`, the id of the admin token "
                "`proctor init` made: no provider's person takes it")
    return None


def domains_refusal(human_id: str, issuers: Iterable[HumanIssuer]) -> str | None:
    """Why ``human_id`` (canonical) names no person of the human ``issuers``, or None:
    where they declare the email domains of their people (``id_domains``), a human
    proctor knows by another credential (an API token) is one of those people too, an
    address in one of their domains; else a person no provider vouches for would share
    the namespace of those that one does."""
    domains = [d for issuer in issuers for d in issuer.id_domains]
    if not domains or _in_domains(human_id, domains):
        return None
    return (f"human `{human_id[:200]}` is not an address in the human issuers' "
            f"`id_domains` ({', '.join(sorted(set(domains)))})")


def check_human_issuers(issuers: Iterable[HumanIssuer]) -> None:
    """Refuse human issuers whose ids could name the same person: a human is known by
    their id alone (owners, approvers, separation of duties, the audit log), so with two
    issuers, X of one and X of the other would be one human, and either provider (or
    anyone who controls an account there) could sign in as the other's people. With
    several, each declares the email domains its ids are in (``id_domains``), and no
    domain is any two issuers'."""
    issuers = tuple(issuers)
    if len(issuers) < 2:
        return
    seen: dict[str, str] = {}
    for issuer in issuers:
        if not issuer.id_domains:
            raise ConfigError(f"OIDC issuer `{issuer.issuer}` needs `id_domains`: with "
                              "several human issuers, each names the email domains its "
                              "people's ids are in, so no id names two people")
        for domain in issuer.id_domains:
            if domain in seen and seen[domain] != issuer.issuer:
                raise ConfigError(f"email domain `{domain}` is in the `id_domains` of both "
                                  f"`{seen[domain]}` and `{issuer.issuer}`: an id names one "
                                  "person, of one issuer")
            seen[domain] = issuer.issuer


def _check_verified(claims: Mapping[str, Any], subject_claim: str) -> None:
    """Refuse a token whose provider says it has not verified the claim that names the
    human (``email_verified: false`` for ``email``, OIDC Core 5.1): a user who may set
    an address the provider does not check would sign in as whoever owns it. A provider
    that never says (no such claim) is taken at its word, as configured."""
    flag = claims.get(f"{subject_claim}_verified")
    if flag is False or (isinstance(flag, str) and flag.strip().lower() == "false"):
        raise IdentityError("proof_claims_invalid",
                            f"the provider has not verified the token's `{subject_claim}` "
                            f"(`{subject_claim}_verified` is false): it names no human")


def _check_authorized_party(claims: Mapping[str, Any], audience: str) -> None:
    """Refuse a token for several audiences unless proctor is its authorized party: a
    token the provider gave another client (a dashboard, a CI job) that also lists
    ``audience`` is that client's, and whoever holds it would act as its human here.
    One audience, proctor's, is ours whoever asked for it (``azp`` then names the client
    that asked for proctor's API, a CLI)."""
    aud = claims.get("aud")
    others = [a for a in aud if a != audience] if isinstance(aud, list) else []
    if others and claims.get("azp") != audience:
        raise IdentityError("proof_wrong_audience",
                            "the token is for several audiences and was not issued to "
                            f"`{audience}` (its `azp`): it is another client's token")


def issuer_from_config(entry: Mapping[str, Any], base: Path, clock: Clock | None = None
                       ) -> HumanIssuer:
    """A :class:`HumanIssuer` from one ``[[oidc_issuers]]`` table of ``server.toml``."""
    settings = issuer_settings(entry, base, also={"subject_claim", "role_claim", "roles",
                                                  "human_claim", "id_domains"}, clock=clock)
    domains = entry.get("id_domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise ConfigError(f"OIDC issuer `{entry['issuer']}`: `id_domains` is a list of "
                          "domains")
    roles = entry.get("roles", {r: r for r in HUMAN_ROLES})
    if not isinstance(roles, Mapping) or not all(isinstance(v, str) for v in roles.values()):
        raise ConfigError(f"OIDC issuer `{entry['issuer']}`: `roles` maps a role to a claim value")
    return HumanIssuer(**settings, subject_claim=str(entry.get("subject_claim", "sub")),
                       role_claim=str(entry.get("role_claim", "roles")), roles=dict(roles),
                       human_claim=(str(entry["human_claim"]) if "human_claim" in entry
                                    else None), id_domains=tuple(domains))
