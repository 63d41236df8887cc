"""Every code proctor answers a refusal or an error with, declared once.

A code is the machine-readable part of an error: the ``code`` of a
:class:`~proctor.errors.ProctorError`, the ``code`` of an RFC 9457 problem, the
``data.reason`` of a JSON-RPC error, a deny's reason in a decision or an audit
event. :data:`Code` is their type, so mypy refuses a code that is not declared;
:data:`REGISTRY` gives each its meaning, the HTTP status the API answers it with
and the JSON-RPC error code the gateways answer it with.

Two statuses depend on where a code is met, not on the code:

- a code that fails *authentication* (``authenticates``: a proof, a grant or an
  agent checked for ``Authorization``) is answered 401 by the API, whatever its
  status elsewhere (``agent_unknown`` is 404 on ``GET /v1/agents/{id}``);
- a gateway that cannot open or hold a session for a request answers -32013
  (session closed), whatever the code of the failure.

``docs/errors.md`` is generated from this module: ``scripts/errors-doc``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "APPROVAL_PENDING",
    "CALL_DENIED",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "PARSE_ERROR",
    "REGISTRY",
    "SESSION_CLOSED",
    "UPSTREAM_FAILED",
    "Code",
    "CodeInfo",
    "authentication_codes",
    "http_status",
    "known",
    "markdown",
    "retry_headers",
    "rpc_code",
]

# JSON-RPC error codes: the standard ones, then the gateway's own below -32000 that
# the MCP SDK does not use (it takes -32000 for a closed connection, -32001 for a
# request timeout).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
CALL_DENIED = -32010
APPROVAL_PENDING = -32011
UPSTREAM_FAILED = -32012
SESSION_CLOSED = -32013

Code = Literal[
    # the store, configuration, requests and documents
    "config_invalid", "store_unavailable", "store_migration_failed", "not_found",
    "request_invalid", "request_too_large", "document_malformed", "document_too_large",
    "document_too_deep", "document_alias_refused",
    # HTTP framing, refused before any application sees the request (proctor.server.framing)
    "request_head_too_large", "request_timeout", "http_version_unsupported",
    "upgrade_unsupported", "request_target_invalid",
    # policy: the policy set, and the decision point's reasons for an answer
    "policy_invalid", "policy_test_invalid", "policy_forbid", "no_matching_permit",
    "approval_required", "no_active_policies", "invalid_request", "engine_error",
    # audit
    "audit_error", "audit_unavailable", "audit_integrity_failed", "audit_delivery_failed",
    # keys
    "signing_key_invalid",
    # identity: agents, manifests, identity proofs
    "agent_id_invalid", "agent_unknown", "agent_exists", "agent_not_active", "agent_changed",
    "agent_state_invalid", "agent_key_invalid", "reviewer_invalid", "manifest_invalid",
    "manifest_changed", "proof_too_large", "proof_malformed", "proof_algorithm_not_allowed",
    "proof_key_unknown", "proof_keys_stale", "proof_invalid_signature", "proof_wrong_issuer",
    "proof_wrong_audience", "proof_expired", "proof_not_yet_valid", "proof_claims_invalid",
    "proof_method_mismatch", "proof_unbound", "proof_wrong_request",
    # grants: tokens, proofs of possession, scope, uses, delegation, issuance
    "grant_malformed", "grant_too_large", "grant_algorithm_not_allowed", "grant_unknown_key",
    "grant_signature_invalid", "grant_wrong_issuer", "grant_wrong_audience", "grant_expired",
    "grant_not_yet_valid", "grant_revoked", "grant_unknown", "grant_uses_exhausted",
    "grant_out_of_scope", "grant_wrong_agent", "grant_max_uses_invalid", "grant_ttl_invalid",
    "grant_manifest_changed", "delegator_not_trusted",
    "proof_missing", "proof_invalid", "proof_key_private", "proof_wrong_key", "proof_stale",
    "proof_replayed", "proof_wrong_target", "scope_invalid", "delegation_widens_scope",
    "delegation_extends_expiry", "delegation_too_deep", "delegation_cycle",
    "delegation_widens_uses", "issuance_denied", "issuance_pending_approval",
    "holder_identity_missing", "holder_identity_invalid", "holder_identity_mismatch",
    "proof_target_unknown",
    # grants: tasks and offers
    "task_unknown", "task_ended", "task_changed", "task_expired", "task_idle", "task_ttl_invalid",
    "policy_changed",
    "task_limits_invalid", "offer_unknown", "offer_redeemed", "offer_expired",
    "offer_cancelled",
    # approvals
    "approval_unknown", "approval_already_decided", "approval_expired", "approval_own_request",
    "approval_comment_too_long", "approval_similar_invalid", "approval_similar_masked",
    "approval_similar_unsupported", "approval_denied", "approval_timeout",
    "approval_not_applicable",
    # enforcement
    "enforcement_error",
    # secrets
    "secret_unknown", "secret_name_invalid", "secret_value_invalid", "secret_actor_invalid",
    "secret_undecryptable", "secret_lease_parent_invalid", "secret_lease_expiry_invalid",
    # the output guard
    "guard_value_unsupported", "guard_value_too_deep",
    # the MCP gateway
    "upstream_unavailable", "upstream_timeout", "upstream_invalid_result",
    "upstream_result_too_large", "session_closed",
    "grant_missing", "grant_leaked", "approval_pending", "tool_unknown", "arguments_invalid",
    "resource_unknown", "prompt_unknown", "completion_unknown", "message_too_large",
    "message_too_deep", "message_invalid", "message_repeated_key", "parse_error",
    "session_limit", "tool_schema_refused", "resource_ambiguous",
    # tool pinning
    "tool_changed", "tool_unreviewed", "tool_rejected", "tool_review_stale",
    "tool_definition_rejected",
    # reviews (of a tool definition, of an agent's manifest)
    "review_digest_missing",
    # the control-plane API and the console
    "credentials_missing", "credentials_malformed", "api_token_invalid", "forbidden",
    "csrf_invalid", "rate_limited", "not_ready", "method_not_allowed", "http_error",
    "internal_error",
    # the agent-side SDK (proctor.client)
    "server_unavailable", "answer_invalid", "guard_missing", "guard_async_only",
    "tool_unmapped",
    # the demo
    "demo_world_invalid",
]


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What a code means, and how it is answered.

    ``status``: the HTTP status of a problem with this code. ``rpc``: the JSON-RPC
    error code of a gateway error with this code (any refusal of a call is
    -32010). ``authenticates``: a code of a failed authentication, answered 401
    when it fails one. ``retry_after_seconds``: a failure that passes (a store or
    a log out of reach for a while): its HTTP answers carry ``Retry-After`` with
    this value, and its JSON-RPC errors ``data.retry_after_seconds``; a code
    without it is not worth retrying as it is (the same request fails again).
    """

    meaning: str
    status: int = 403
    rpc: int = CALL_DENIED
    authenticates: bool = False
    retry_after_seconds: int | None = None


def _auth(meaning: str, status: int = 403) -> CodeInfo:
    return CodeInfo(meaning, status, authenticates=True)


REGISTRY: Mapping[Code, CodeInfo] = {
    # the store, configuration, requests and documents
    "config_invalid": CodeInfo("a configuration file, setting or environment variable that "
                               "proctor cannot use", 422),
    "store_unavailable": CodeInfo("the database cannot be reached or refused the operation, "
                                  "or a row it needs was locked by another transaction past "
                                  "the lock timeout (`database_lock_timeout_seconds`)",
                                  503, retry_after_seconds=1),
    "store_migration_failed": CodeInfo(
        "the database schema could not be brought up to date, or the database is at a "
        "revision this proctor does not know (a newer proctor migrated it)", 503),
    "not_found": CodeInfo("nothing of that kind has that id (a path no route serves, too)",
                          404),
    "request_invalid": CodeInfo("the request's body, parameters or arguments are not valid "
                                "(on the command line: a usage error, exit 2)", 422),
    "request_too_large": CodeInfo("the request body is over the size limit", 413),
    "request_head_too_large": CodeInfo("the request head has more than 100 header fields or "
                                       "16 KiB of target, names and values; the connection "
                                       "is closed", 431),
    "request_timeout": CodeInfo("the request body was not whole 30 s after its head; the "
                                "connection is closed", 408),
    "http_version_unsupported": CodeInfo("a request line of another version than HTTP/1.1 "
                                         "or HTTP/1.0 (HTTP/0.9 without one, say); the "
                                         "connection is closed", 505),
    "upgrade_unsupported": CodeInfo("the request asked to switch protocols (`Connection: "
                                    "upgrade`: a WebSocket handshake, h2c), which neither "
                                    "server does; the connection is closed", 400),
    "request_target_invalid": CodeInfo("a request target that is not a path (`POST "
                                       "http://host/mcp`): neither server is a proxy; "
                                       "the connection is closed", 400),
    "document_malformed": CodeInfo("a JSON, YAML or TOML document that does not parse", 422),
    "document_too_large": CodeInfo("a document over its size cap", 422),
    "document_too_deep": CodeInfo("a document nested past the depth cap", 422),
    "document_alias_refused": CodeInfo("a YAML document with an alias (it could multiply a "
                                       "small document)", 422),
    # policy
    "policy_invalid": CodeInfo("a policy set that does not parse or validate; it was not "
                               "activated", 422),
    "policy_test_invalid": CodeInfo("a policy test file that cannot be read as test cases",
                                    422),
    "policy_forbid": CodeInfo("a forbid policy denied the request"),
    "no_matching_permit": CodeInfo("no permit policy matched the request"),
    "approval_required": CodeInfo("a permit asks for a human's approval, and none matches the "
                                  "call yet", rpc=APPROVAL_PENDING),
    "no_active_policies": CodeInfo("no policy set is active, so everything is denied"),
    "invalid_request": CodeInfo("the decision request does not match the policy schema "
                                "(unknown action, entity or context)"),
    "engine_error": CodeInfo("the policy engine failed on the request (a policy that "
                             "failed to evaluate, such as an attribute read without "
                             "`has`, or the engine itself): a call or an issuance denied, "
                             "audited, and answered 500, not as a policy's deny, so that "
                             "callers and operators see a failure to alert on; the same "
                             "request against the same policies fails again, so it is "
                             "not a 503 and carries no `Retry-After`: fix the policy", 500),
    # audit
    "audit_error": CodeInfo("the audit log's archive cannot be written or read", 503),
    "audit_unavailable": CodeInfo("an audit event could not be made durable, so what it "
                                  "records is denied: the database is out of reach, the write "
                                  "did not complete within the log's timeout, or a row its "
                                  "batch needs was locked by another transaction past the "
                                  "writer's lock bound (the whole batch denied, nothing of it "
                                  "written)", 503, retry_after_seconds=1),
    "audit_integrity_failed": CodeInfo("the audit chain does not verify, so an operation that "
                                       "relies on it refused to run", 503),
    "audit_delivery_failed": CodeInfo("an audit stream's collector did not acknowledge a batch; "
                                      "it is sent again from the stream's cursor", 502),
    # keys
    "signing_key_invalid": CodeInfo("a signing key that cannot be read, created or used",
                                    500),
    # identity
    "agent_id_invalid": _auth("not a SPIFFE ID of the form "
                              "`spiffe://<trust-domain>/agent/<name>`", 422),
    "agent_unknown": _auth("no agent is registered under that id", 404),
    "agent_exists": CodeInfo("an agent with that id is already registered", 409),
    "agent_not_active": _auth("the agent is suspended or retired, and so is denied "
                              "everything"),
    "agent_changed": CodeInfo("the agent's trust state changed, or its risk rose (in "
                              "another process, say), while the call or issuance was "
                              "decided: that decision is refused, and the call or issuance "
                              "decided once more on the agent as it is now (a second "
                              "refusal is the answer)"),
    "agent_state_invalid": CodeInfo("a trust-state change that is not allowed from the "
                                    "agent's current state", 409),
    "agent_key_invalid": CodeInfo("a key that cannot be the agent's: not P-256 or Ed25519, "
                                  "private where public is wanted (or not a private key "
                                  "where one is), unreadable, or another agent's", 422),
    "reviewer_invalid": CodeInfo("a review or state change by someone who may not make it "
                                 "(an agent, say)", 422),
    "manifest_invalid": CodeInfo("an agent manifest that is not valid", 422),
    "manifest_changed": CodeInfo("the presented manifest changed since the reviewer looked "
                                 "at it", 409),
    "proof_too_large": _auth("an identity proof over the size cap"),
    "proof_malformed": _auth("an identity proof that is not a compact JWS/JWT"),
    "proof_algorithm_not_allowed": _auth("the proof's `alg` is not on the allow-list or does "
                                         "not match the key (`none`, HS256, ...)"),
    "proof_key_unknown": _auth("no trusted key matches the proof's key id"),
    "proof_keys_stale": _auth("the issuer's or trust domain's key set could not be loaded "
                              "again for an hour, so its keys are not used"),
    "proof_invalid_signature": _auth("the identity proof's signature does not verify"),
    "proof_wrong_issuer": _auth("the identity proof's issuer is not the one trusted for "
                                "this agent"),
    "proof_wrong_audience": _auth("the identity proof is for another audience"),
    "proof_expired": _auth("the identity proof has expired"),
    "proof_not_yet_valid": _auth("the identity proof is not valid yet"),
    "proof_claims_invalid": _auth("a required claim of the identity proof is missing or "
                                  "malformed, or the proof lives too long"),
    "proof_method_mismatch": _auth("the agent is registered to prove its identity another "
                                   "way"),
    "proof_unbound": _auth("an own-key identity proof that names no request (no `htm` and "
                           "`htu`): one made to be reused, as proctor's SDK did before "
                           "identity proofs were bound to their request and taken once; "
                           "the agent signs one for each request (an up-to-date SDK does)"),
    "proof_wrong_request": _auth("an own-key identity proof signed for another request "
                                 "(`htm`, `htu`, `bh`: method, URL, body) than the one it "
                                 "came with, or where no request is named (a console "
                                 "sign-in, a holder's identity)"),
    # grants
    "grant_malformed": _auth("a grant that is not a compact JWS with complete claims", 422),
    "grant_too_large": _auth("a grant over the size cap", 422),
    "grant_algorithm_not_allowed": _auth("the grant's `alg` is not on the allow-list"),
    "grant_unknown_key": _auth("the grant is signed by a key this issuer does not know"),
    "grant_signature_invalid": _auth("the grant's signature does not verify"),
    "grant_wrong_issuer": _auth("the grant's issuer is not trusted"),
    "grant_wrong_audience": _auth("the grant is for another audience"),
    "grant_expired": _auth("the grant has expired"),
    "grant_not_yet_valid": _auth("the grant is not valid yet"),
    "grant_revoked": _auth("the grant, one it derives from, or its task was revoked"),
    "grant_unknown": CodeInfo("no grant of this issuer has that id or accessor", 404),
    "grant_uses_exhausted": CodeInfo("the grant (or the parent of a delegation) has no uses "
                                     "left"),
    "grant_out_of_scope": CodeInfo("the tool or its arguments are outside the grant's scope"),
    "grant_wrong_agent": _auth("the grant is not for this agent, or not for its current key"),
    "grant_manifest_changed": _auth("the grant was issued while its agent (or an agent it "
                                    "was delegated from: each `act` entry's `mfd`) ran "
                                    "another manifest, and a human has reviewed a new one "
                                    "since"),
    "delegator_not_trusted": _auth("an agent the grant was delegated from (its `act` chain) "
                                   "is not trusted now: its manifest drifted, it is "
                                   "unattested or no longer registered, or its risk score "
                                   "is at or above `delegator_max_risk`; a review of it (or "
                                   "its score falling) lets the line's grants work again"),
    "grant_max_uses_invalid": CodeInfo("max uses must be at least 1", 422),
    "grant_ttl_invalid": CodeInfo("a grant's ttl outside the allowed range", 422),
    "proof_missing": _auth("the call carries no proof of possession of the grant's key", 422),
    "proof_invalid": _auth("the proof of possession is malformed or its signature does not "
                           "verify"),
    "proof_key_private": _auth("the proof's header carries a private key"),
    "proof_wrong_key": _auth("the proof is signed by another key than the grant is bound to"),
    "proof_stale": _auth("the proof of possession is too old or from the future"),
    "proof_replayed": _auth("this proof of possession (or own-key identity proof) was "
                            "already used"),
    "proof_wrong_target": _auth("the proof is signed over another method or URL"),
    "scope_invalid": CodeInfo("a scope document that cannot be parsed", 422),
    "delegation_widens_scope": CodeInfo("a child grant asks for more than its parent's scope",
                                        422),
    "delegation_extends_expiry": CodeInfo("a child grant would outlive its parent", 422),
    "delegation_too_deep": CodeInfo("the delegation chain is at its depth limit", 422),
    "delegation_cycle": CodeInfo("the receiving agent already holds this grant or one it "
                                 "derives from", 422),
    "delegation_widens_uses": CodeInfo("a child grant asks for more uses than its parent has "
                                       "left", 422),
    "issuance_denied": CodeInfo("policy denied issuing the grant"),
    "issuance_pending_approval": CodeInfo("issuing the grant waits for a human's approval"),
    "holder_identity_missing": CodeInfo("the grant's holder gave no identity proof to bind "
                                        "the grant to", 422),
    "holder_identity_invalid": CodeInfo("the holder's identity proof does not verify"),
    "holder_identity_mismatch": CodeInfo("the holder's identity proof names another agent or "
                                         "key"),
    "proof_target_unknown": CodeInfo("the call's `target` (its proof's `htu`) is neither the "
                                     "route's own URL nor under one of the deployment's "
                                     "`enforcement_points` (server.toml)", 422),
    "task_unknown": CodeInfo("no task has that id", 404),
    "task_ended": CodeInfo("the task has ended, and its grants with it", 409),
    "policy_changed": CodeInfo("another policy revision was activated (in another process, "
                               "say) while the call or issuance was decided: that decision "
                               "is refused, and the call or issuance decided once more on "
                               "the revision now active (a second refusal is the answer)"),
    "task_changed": CodeInfo("the task read more sensitive data (in another process, say) "
                             "while the call was decided: that decision is refused, and the "
                             "call decided once more on the task as it is now"),
    "task_expired": CodeInfo("the task is past its maximum lifetime", 409),
    "task_idle": CodeInfo("the task was idle past its timeout", 409),
    "task_ttl_invalid": CodeInfo("a task's lifetime or idle timeout outside the allowed range",
                                 422),
    "task_limits_invalid": CodeInfo("a task's limits that are not valid", 422),
    "offer_unknown": CodeInfo("no grant offer has that id", 404),
    "offer_redeemed": CodeInfo("the grant offer was already redeemed", 409),
    "offer_expired": CodeInfo("the grant offer has expired", 409),
    "offer_cancelled": CodeInfo("the grant offer was cancelled", 409),
    # approvals
    "approval_unknown": CodeInfo("no approval request has that id", 404),
    "approval_already_decided": CodeInfo("the approval request was already decided", 409),
    "approval_expired": CodeInfo("the approval request expired before it was decided (or "
                                 "used)", 409),
    "approval_own_request": CodeInfo("no one decides an approval for a call they asked for "
                                     "(separation of duties)"),
    "approval_comment_too_long": CodeInfo("the approval's comment is over the length limit",
                                          422),
    "approval_similar_invalid": CodeInfo("an \"approve similar\" rule that is not valid", 422),
    "approval_similar_masked": CodeInfo("an \"approve similar\" rule that pins a masked "
                                        "argument", 422),
    "approval_similar_unsupported": CodeInfo("an \"approve similar\" rule for a call it cannot "
                                             "cover", 422),
    "approval_denied": CodeInfo("a human denied the call"),
    "approval_timeout": CodeInfo("no human decided the call's approval in time",
                                 rpc=APPROVAL_PENDING),
    "approval_not_applicable": CodeInfo("an approval came for a verdict with no call to "
                                        "approve"),
    # enforcement
    "enforcement_error": CodeInfo("the call could not be decided (an unexpected failure); "
                                  "denied"),
    # secrets
    "secret_unknown": CodeInfo("no secret has that name"),
    "secret_name_invalid": CodeInfo("a secret name that is not valid"),
    "secret_value_invalid": CodeInfo("a secret value that is empty, too large or not text"),
    "secret_actor_invalid": CodeInfo("the secret store was asked by someone who may not"),
    "secret_undecryptable": CodeInfo("a sealed secret that the master key cannot open"),
    "secret_lease_parent_invalid": CodeInfo("a secret lease under an unknown, revoked or "
                                            "expired parent, or for a task or agent that is "
                                            "not the parent's"),
    "secret_lease_expiry_invalid": CodeInfo("a secret lease that would outlive its parent or "
                                            "is already over"),
    # the output guard
    "guard_value_unsupported": CodeInfo("a value the output guard cannot scan (a type other "
                                        "than JSON's)"),
    "guard_value_too_deep": CodeInfo("a value nested past the output guard's limit"),
    # the MCP gateway
    "upstream_unavailable": CodeInfo("the upstream MCP server cannot be started or reached, "
                                     "or closed the connection", 502, UPSTREAM_FAILED),
    "upstream_timeout": CodeInfo("the upstream MCP server did not answer in time", 504,
                                 UPSTREAM_FAILED),
    "upstream_invalid_result": CodeInfo("the upstream answered with something the gateway "
                                        "cannot relay", 502, UPSTREAM_FAILED),
    "upstream_result_too_large": CodeInfo("the upstream's answer is over the gateway's "
                                          "max_answer_bytes", 502, UPSTREAM_FAILED),
    "session_closed": CodeInfo("the gateway session is closed: its grant was revoked or "
                               "expired, or the gateway is stopping", 403, SESSION_CLOSED),
    "grant_missing": CodeInfo("the gateway was given no grant", 401, SESSION_CLOSED),
    "grant_leaked": CodeInfo("the call's arguments carry a proctor grant; it is revoked"),
    "approval_pending": CodeInfo("a human has not yet decided the call's approval; call "
                                 "again once it is approved", rpc=APPROVAL_PENDING),
    "tool_unknown": CodeInfo("no tool of that name is exposed here", 404, INVALID_PARAMS),
    "arguments_invalid": CodeInfo("the arguments do not match the tool's input schema, or "
                                  "hold text that is not valid Unicode", 422,
                                  INVALID_PARAMS),
    "resource_unknown": CodeInfo("no resource of that URI is exposed here", 404,
                                 INVALID_PARAMS),
    "prompt_unknown": CodeInfo("no prompt of that name is exposed here", 404, INVALID_PARAMS),
    "completion_unknown": CodeInfo("nothing to complete for that reference", 404,
                                   INVALID_PARAMS),
    "session_limit": CodeInfo("the grant holds as many MCP sessions open on the HTTP "
                              "gateway as one grant may: end one (DELETE) or let one idle "
                              "out before initializing another", 429, INVALID_REQUEST),
    "tool_schema_refused": CodeInfo("the tool's input schema is one the gateway does not "
                                    "evaluate: a `$ref` outside it (never fetched), a "
                                    "pattern RE2 cannot match in linear time (a "
                                    "backreference, a lookaround) or cannot read as "
                                    "ECMA-262 (an inline flag group, `\\p{…}`), a "
                                    "reference within it that does not resolve, or "
                                    "references that written out make it over 10,000 "
                                    "keywords; the tool is hidden and its calls are "
                                    "refused. A call whose check spends its work budget "
                                    "is refused too", 422),
    "resource_ambiguous": CodeInfo("two upstreams of the shared endpoint list a resource "
                                   "(or resource template) of that URI: read it on its "
                                   "server's endpoint, `/mcp/<server>`", 409, INVALID_PARAMS),
    "message_too_large": CodeInfo("a JSON-RPC message over the size cap", 413,
                                  INVALID_REQUEST),
    "message_too_deep": CodeInfo("a JSON-RPC message nested past the depth cap", 400,
                                 INVALID_REQUEST),
    "message_invalid": CodeInfo("JSON that is not a valid JSON-RPC message", 400,
                                INVALID_REQUEST),
    "message_repeated_key": CodeInfo("a JSON-RPC message that gives a key twice in one "
                                     "object: readers differ on which one counts", 400,
                                     INVALID_REQUEST),
    "parse_error": CodeInfo("a message that is not JSON", 400, PARSE_ERROR),
    # tool pinning
    "tool_changed": CodeInfo("the tool's definition (or name) changed since a human "
                             "reviewed it; it is hidden and denied until reviewed again"),
    "tool_unreviewed": CodeInfo("a new tool on a known server; it is hidden and denied "
                                "until a human reviews it"),
    "tool_rejected": CodeInfo("a human rejected the tool definition the upstream lists; "
                              "it is hidden and denied whenever it is listed, in any pin mode"),
    "tool_review_stale": CodeInfo("no definition of the tool with the digest a review or "
                                  "rejection names waits for a human (it was never seen, or "
                                  "was decided already): look at the tool again", 409),
    "tool_definition_rejected": CodeInfo("a review or rejection names a tool definition a "
                                         "human rejected; a rejection is final", 409),
    # reviews
    "review_digest_missing": CodeInfo(
        "a review that does not name the digest of the definition or manifest the reviewer "
        "looked at (`expected_digest`); nothing is reviewed", 400, INVALID_PARAMS),
    # the control-plane API and the console
    "credentials_missing": _auth("the operation needs credentials and the request has none",
                                 401),
    "credentials_malformed": _auth("an `Authorization` header proctor cannot read", 401),
    "api_token_invalid": _auth("an API token that is unknown, revoked or expired", 401),
    "forbidden": CodeInfo("the control-plane policy denies the operation (audited)"),
    "csrf_invalid": CodeInfo("a console form whose CSRF token is missing, wrong or expired"),
    "rate_limited": CodeInfo("too many requests, or failed attempts, from one caller; retry "
                             "after `Retry-After` seconds", 429),
    "not_ready": CodeInfo("the server cannot serve yet: the database does not answer or no "
                          "policy set is active", 503),
    "method_not_allowed": CodeInfo("the path exists, but not with this HTTP method", 405),
    "http_error": CodeInfo("another refusal of the web framework, answered with the "
                           "framework's own status", 400),
    "internal_error": CodeInfo("the request failed inside proctor (a bug; logged, never "
                               "detailed)", 500),
    # the agent-side SDK
    "server_unavailable": CodeInfo("the agent's SDK cannot reach the proctor server", 503),
    "answer_invalid": CodeInfo("the proctor server answered with something the agent's SDK "
                               "cannot read (or a code it does not know)", 502),
    "guard_missing": CodeInfo("the agent's SDK refuses a tool call made outside a guarded "
                              "block"),
    "guard_async_only": CodeInfo("a guard holding an async client was asked from blocking "
                                 "code"),
    "tool_unmapped": CodeInfo("a framework tool with no `server/tool` name for proctor"),
    # the demo
    "demo_world_invalid": CodeInfo("the demo's world file cannot be used", 422),
}

_DECLARED = frozenset(get_args(Code))
if set(REGISTRY) != _DECLARED:  # pragma: no cover - a mistake in this module
    raise ImportError(f"proctor.codes: declared but not registered: "
                      f"{sorted(_DECLARED - set(REGISTRY))}; registered but not declared: "
                      f"{sorted(set(REGISTRY) - _DECLARED)}")


def http_status(code: Code) -> int:
    """The HTTP status of a problem with ``code``."""
    return REGISTRY[code].status


def retry_headers(code: Code) -> dict[str, str]:
    """``Retry-After`` for a code whose failure passes (``retry_after_seconds``), else
    no header: a client that retries on any 5xx is told which ones are worth it."""
    seconds = REGISTRY[code].retry_after_seconds
    return {} if seconds is None else {"Retry-After": str(seconds)}


def rpc_code(code: Code) -> int:
    """The JSON-RPC error code of a gateway error with ``code``."""
    return REGISTRY[code].rpc


def known(text: str) -> Code | None:
    """``text`` as a code if it is one (a code read off the wire), else None."""
    return text if text in _DECLARED else None  # type: ignore[return-value]


def authentication_codes() -> tuple[Code, ...]:
    """The codes a failed authentication answers with (401), in registry order."""
    return tuple(code for code, info in REGISTRY.items() if info.authenticates)


def markdown() -> str:
    """``docs/errors.md``: every code with its meaning, HTTP status and JSON-RPC code."""
    lines = [
        "# Error codes",
        "",
        "<!-- Generated from src/proctor/codes.py by scripts/errors-doc; do not edit. -->",
        "",
        "Every code proctor answers an error or a refusal with: the `code` of a problem",
        "(HTTP API), the `data.reason` of a JSON-RPC error (MCP gateway), the `code` of a",
        "deny (decisions, `/v1/grants/check`, the audit log) and of `--json` CLI errors.",
        "The list is `proctor.codes.REGISTRY`; the type `proctor.codes.Code` makes an",
        "undeclared code a type error, and a test checks that each one here is used.",
        "",
        "Two answers depend on where a code is met: a code marked *auth* is answered",
        "**401** when it fails authentication of a request (its status below otherwise),",
        "and a gateway that cannot open or hold a session answers **-32013** whatever the",
        "code of the failure. JSON-RPC codes: -32010 call denied, -32011 approval pending,",
        "-32012 upstream failed, -32013 session closed, and the standard -32602 invalid",
        "params, -32600 invalid request, -32700 parse error.",
        "",
        "A failure that passes (*retry N*: the store or the audit log out of reach) is",
        "answered with `Retry-After: N` over HTTP and `data.retry_after_seconds: N` in a",
        "JSON-RPC error. `engine_error` (a policy that cannot be evaluated, such as an",
        "attribute read without `has`) fails the same way each time the request is sent:",
        "it is answered 500, not 503, and without `Retry-After`.",
        "",
        "Answers corrected when the registry was made (each was inconsistent before):",
        "JSON that is not a JSON-RPC message is `message_invalid` on stdio (its message",
        "began `invalid_request:`, the policy's code for a request that does not fit the",
        "schema); `session_closed` met while a call starts an upstream is -32013 (it was",
        "-32012, as if the upstream had failed).",
        "",
        "| code | HTTP | JSON-RPC | meaning |",
        "|---|---|---|---|",
    ]
    for code, info in sorted(REGISTRY.items()):
        status = f"{info.status} (401 auth)" if info.authenticates and info.status != 401 \
            else str(info.status)
        if info.retry_after_seconds is not None:
            status += f" (retry {info.retry_after_seconds})"
        meaning = info.meaning.replace("|", "\\|")
        lines.append(f"| `{code}` | {status} | {info.rpc} | {meaning} |")
    return "\n".join(lines) + "\n"
