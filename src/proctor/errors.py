"""One error vocabulary for proctor, each with a stable machine-readable code.

Errors of foreign libraries (SQLAlchemy, cedarpy, YAML) are translated where
they cross into proctor (``raise ProctorError(...) from exc``), so callers see
only these::

    ProctorError                       (a family: each class below has or takes a code)
    ├── ConfigError                    config_invalid
    ├── StoreError                     store_unavailable
    │   └── MigrationError             store_migration_failed
    ├── NotFoundError                  not_found
    ├── ReviewStaleError               tool_review_stale
    ├── ReviewUnnamedError             review_digest_missing
    ├── ToolRejectedError              tool_definition_rejected
    ├── RequestError                   request_invalid
    ├── DocumentError                  one code per document refused (see its docstring)
    ├── PolicyError                    (a family)
    │   ├── PolicyValidationError      policy_invalid
    │   └── PolicyTestError            policy_test_invalid
    ├── AuditError                     audit_error
    │   ├── AuditUnavailableError      audit_unavailable
    │   ├── AuditIntegrityError        audit_integrity_failed
    │   └── AuditDeliveryError         audit_delivery_failed
    ├── IdentityError                  one code per refused agent, manifest or proof
    │   └── AgentError                 agent_unknown, agent_not_active (a GrantError too)
    ├── SecretError                    one code per refusal (see its docstring)
    ├── GuardError                     one code per value the output guard cannot scan
    ├── GatewayError                   one code per refusal of the MCP gateway (see its docstring)
    ├── ApiError                       one code per refusal of the HTTP API (see its docstring)
    ├── SigningKeyError                signing_key_invalid
    ├── GrantError                     one code per failed check (see its docstring)
    │   └── ScopeError                 scope_invalid
    └── ApprovalError                  one code per refusal (see its docstring)

Every code is declared once, with its meaning, HTTP status and JSON-RPC code, in
:mod:`proctor.codes`; ``code`` is typed :data:`~proctor.codes.Code`, so an
undeclared code is a type error. Each code belongs to one class: a code that two
parts meet (an agent that is not registered or may not act, met by identity and
by a grant's check) has a class of its own that both raise.

Messages follow Cedar's style: lowercase, no trailing period, user input in
backticks. An authorization *answer* is never an exception: ``decide`` returns a
deny that carries the error instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from proctor.codes import Code, http_status

__all__ = [
    "AgentError",
    "ApiError",
    "ApprovalError",
    "AuditDeliveryError",
    "AuditError",
    "AuditIntegrityError",
    "AuditUnavailableError",
    "ConfigError",
    "Diagnostic",
    "DocumentCode",
    "DocumentError",
    "GatewayError",
    "GrantError",
    "GuardError",
    "IdentityError",
    "MigrationError",
    "NotFoundError",
    "PolicyError",
    "PolicyTestError",
    "PolicyValidationError",
    "ProctorError",
    "RequestError",
    "ReviewStaleError",
    "ReviewUnnamedError",
    "ScopeError",
    "SecretError",
    "SigningKeyError",
    "StoreError",
    "ToolRejectedError",
]


class ProctorError(Exception):
    """Base of every error proctor raises on purpose; ``code`` is one of
    :data:`proctor.codes.Code` (each family below sets it, or takes it)."""

    code: Code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ProctorError):
    code = "config_invalid"


class StoreError(ProctorError):
    code: Code = "store_unavailable"


class MigrationError(StoreError):
    code = "store_migration_failed"


class NotFoundError(ProctorError):
    code = "not_found"


class ReviewStaleError(ProctorError):
    """A review of a tool definition other than the one the reviewer looked at."""

    code = "tool_review_stale"


class ReviewUnnamedError(ProctorError):
    """A human's review (of a tool definition, of an agent's manifest) that does not name
    the digest of what the reviewer looked at, so it would accept whatever is stored."""

    code = "review_digest_missing"


class ToolRejectedError(ProctorError):
    """A review or rejection of a tool definition a human rejected: a rejection is final
    for that definition (the upstream must list another, which a human then decides)."""

    code = "tool_definition_rejected"


class RequestError(ProctorError):
    code = "request_invalid"


DocumentCode = Literal["document_malformed", "document_too_large", "document_too_deep",
                       "document_alias_refused"]


class DocumentError(ProctorError):
    """A JSON, YAML or TOML document from outside that proctor will not read.

    Codes: ``document_malformed`` (not valid JSON, YAML or TOML),
    ``document_too_large`` (over the size cap), ``document_too_deep`` (nested past
    the depth cap), ``document_alias_refused`` (a YAML alias, which could multiply
    a small document). File loaders raise their own error with this one's message.
    """


    def __init__(self, code: DocumentCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class PolicyError(ProctorError):
    """A policy set or policy test that proctor will not use."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in one policy source, located as ``file:line:column``."""

    file: str
    line: int
    column: int
    message: str
    policy_id: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyValidationError(PolicyError):
    """A policy set that failed to parse or validate; it was not activated."""

    code = "policy_invalid"

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = str(self.diagnostics[0]) if self.diagnostics else "no diagnostics"
        more = len(self.diagnostics) - 1
        suffix = f" (and {more} more)" if more > 0 else ""
        super().__init__(f"invalid policy set: {first}{suffix}")


class PolicyTestError(PolicyError):
    """A policy test file that cannot be read as test cases."""

    code = "policy_test_invalid"


class AuditError(ProctorError):
    code: Code = "audit_error"


class AuditUnavailableError(AuditError):
    """An audit event could not be made durable; the decision it records must fail closed."""

    code = "audit_unavailable"


class AuditIntegrityError(AuditError):
    """The audit chain does not verify, so an operation that relies on it refused to run."""

    code = "audit_integrity_failed"


class AuditDeliveryError(AuditError):
    """An audit stream's collector did not acknowledge a batch (it is sent again)."""

    code = "audit_delivery_failed"


class SigningKeyError(ProctorError):
    """A signing key that cannot be read, created or used."""

    code = "signing_key_invalid"


class GrantError(ProctorError):
    """A grant, proof, scope or delegation that is not valid; ``code`` says which check failed.

    Codes: ``grant_malformed``, ``grant_too_large``, ``grant_algorithm_not_allowed``,
    ``grant_unknown_key``, ``grant_signature_invalid``, ``grant_wrong_issuer``,
    ``grant_wrong_audience``, ``grant_expired``, ``grant_not_yet_valid``,
    ``grant_revoked``, ``grant_unknown``, ``grant_uses_exhausted``,
    ``grant_out_of_scope``, ``grant_wrong_agent``, ``proof_missing``, ``proof_invalid``,
    ``proof_key_private``,
    ``proof_wrong_key``, ``proof_stale``, ``proof_replayed``, ``proof_wrong_target``,
    ``delegation_widens_scope``, ``delegation_extends_expiry``, ``delegation_too_deep``,
    ``delegation_cycle``, ``delegation_widens_uses``, ``grant_max_uses_invalid``,
    ``issuance_denied``, ``issuance_pending_approval``, ``grant_ttl_invalid``,
    ``task_ended``, ``task_unknown``, ``grant_manifest_changed``. A grant whose agent
    is not registered or may not act is an :class:`AgentError` (a GrantError too).
    """

    # The verified claims of the grant, when the caller had proven its key before
    # the check failed (out of scope, revoked, replayed, used up); None otherwise.
    holder: object | None = None
    # The claim of the nonce of the proof verified before a check that needs no write
    # failed (proctor.grants.accounting.ProofSpent): written with the refusal, so that
    # a proof is spent whatever the answer; None otherwise.
    spent: object | None = None

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class ApprovalError(ProctorError):
    """An approval request that cannot be decided as asked; ``code`` says why.

    Codes: ``approval_unknown``, ``approval_already_decided``, ``approval_expired``,
    ``approval_own_request`` (separation of duties), ``approval_comment_too_long``;
    for "approve similar": ``approval_similar_invalid``, ``approval_similar_masked``,
    ``approval_similar_unsupported``.
    """


    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class ScopeError(GrantError):
    """A scope document that cannot be parsed."""

    code = "scope_invalid"

    def __init__(self, message: str) -> None:
        super().__init__("scope_invalid", message)


class IdentityError(ProctorError):
    """An agent registration, manifest or identity proof that proctor refused; ``code``
    says which check failed.

    Codes: agents: ``agent_id_invalid`` (not ``spiffe://<trust-domain>/agent/<name>``),
    ``agent_exists``, ``agent_state_invalid`` (a trust-state change not allowed from
    the current state), ``agent_key_invalid``, ``reviewer_invalid`` (a review or
    state change by someone who may not make it); manifests: ``manifest_invalid``,
    ``manifest_changed`` (since the reviewer looked at it); identity proofs (own-key
    JWS, JWT-SVID, OIDC token): ``proof_too_large``, ``proof_malformed``,
    ``proof_algorithm_not_allowed``, ``proof_key_unknown``, ``proof_keys_stale``,
    ``proof_invalid_signature``,
    ``proof_wrong_issuer``, ``proof_wrong_audience``, ``proof_expired``,
    ``proof_not_yet_valid``, ``proof_claims_invalid``, ``proof_method_mismatch``. An
    agent that is not registered or may not act is an :class:`AgentError`.
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


AgentCode = Literal["agent_unknown", "agent_not_active"]


class AgentError(IdentityError, GrantError):
    """An agent that is not registered (``agent_unknown``) or may not act, being
    suspended or retired (``agent_not_active``).

    Identity raises it when an agent is looked up or authenticated, grants when a
    grant's or a task's agent is checked: one class for the two codes wherever they
    are met, so a handler of either family answers it the same way.
    """

    def __init__(self, code: AgentCode, message: str) -> None:
        ProctorError.__init__(self, message)  # the two families' own set only the code
        self.code = code


class SecretError(ProctorError):
    """A secret-store request refused; ``code`` says why. Never carries the value.

    Codes: ``secret_unknown``, ``secret_name_invalid``, ``secret_value_invalid``,
    ``secret_actor_invalid``, ``secret_undecryptable``, ``secret_lease_parent_invalid``
    (unknown, revoked or expired parent, or a task or agent that is not the parent's),
    ``secret_lease_expiry_invalid``.
    """


    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class GuardError(ProctorError):
    """A value the output guard cannot scan, so it must not be passed on.

    Codes: ``guard_value_unsupported`` (a type other than JSON's),
    ``guard_value_too_deep`` (nesting past the limit).
    """


    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class GatewayError(ProctorError):
    """The MCP gateway could not serve a request; ``code`` says why.

    Codes: ``upstream_unavailable`` (cannot start or reach the server, or it
    closed the connection), ``upstream_timeout``, ``upstream_invalid_result``,
    ``upstream_result_too_large``,
    ``session_closed`` (its grant was revoked or expired), ``grant_missing``. A grant
    for another agent is a :class:`GrantError` (``grant_wrong_agent``), an unusable
    agent key file an :class:`IdentityError` (``agent_key_invalid``).
    """


    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class ApiError(ProctorError):
    """A request the control-plane API refuses, answered with HTTP ``status``: the
    code's own (:mod:`proctor.codes`) unless the place decides (401 for a failed
    authentication).

    Codes of its own: ``credentials_missing``, ``credentials_malformed``,
    ``api_token_invalid`` (401), ``forbidden`` (403), ``rate_limited`` (429),
    ``not_ready`` (503); any other proctor code keeps its meaning. ``headers``
    and ``extra`` go into the response; ``audited`` is set once a refusal has
    been written to the audit log.
    """

    def __init__(self, code: Code, message: str, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, object] | None = None, audited: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.status = http_status(code) if status is None else status
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        self.audited = audited
