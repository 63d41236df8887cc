"""The tables, as SQLAlchemy Core metadata; migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

__all__ = [
    "agents",
    "api_tokens",
    "approval_grants",
    "audit_checkpoints",
    "audit_cuts",
    "audit_events",
    "audit_head",
    "audit_keys",
    "audit_stream_cursors",
    "changes",
    "connectors",
    "console_sessions",
    "grant_offers",
    "grants",
    "issuer_keys",
    "leases",
    "metadata",
    "policy_revisions",
    "policy_shadow",
    "proof_nonces",
    "risk_baselines",
    "secret_leases",
    "secrets",
    "shadow_differences",
    "tasks",
    "tool_catalog",
    "tool_definitions",
]

metadata = MetaData()

# One row per distinct policy set ever loaded. `status` is candidate, active or
# retired; exactly one row is active once any set was activated. `sources` maps
# each file's relative path to its text, so a revision can be re-validated,
# diffed and shown with source lines without the original directory.
policy_revisions = Table(
    "policy_revisions",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True,
           autoincrement=True),
    Column("digest", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("origin", Text, nullable=False),
    Column("sources", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("activated_at", DateTime(timezone=True), nullable=True),
    Index("ix_policy_revisions_status", "status"),
    Index("ix_policy_revisions_digest", "digest"),
)

# The audit chain. `seq` is the event's position (1, 2, ...), assigned by the
# writer; `body` is the canonical JSON of the event, the exact text hashed:
# hash = sha256(bytes.fromhex(prev_hash) || body). The other columns are an
# index over `body` for queries; `proctor audit verify` checks they agree. A search by
# `actor_id`, `task`, `actor_type` or `time` reads `audit_keys` up to the head's `keyed`
# mark and these rows after it: those columns have no index of their own (migrations 0022
# and 0029), since an index entry per key per batch made every batch write a leaf of each
# index, away from the right edge of the table's own b-tree.
# On SQLite `seq` is the rowid (`INTEGER PRIMARY KEY`, migration 0027): the table is one
# b-tree keyed by it, not a rowid table beside an index on `seq`.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("actor_type", String(8), nullable=False),
    Column("actor_id", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("decision", String(24), nullable=True),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row (id 1): the chain head. Writers advance it with a compare-and-set in
# the transaction that appends, so two processes never fork the chain; it also
# remembers the head when every event has been archived away. `folded` is the
# position of the last event folded into the risk baselines (proctor.oversight.risk;
# NULL: none yet), moved by a folding writer in the head's own compare-and-set and by
# the risk engine's catch-up by a compare-and-set of its own (migration 0021), so that
# two processes never fold one event twice. `keyed` is the position up to which
# `audit_keys` holds every event's keys (NULL: none), moved with the keys it covers.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("folded", BigInteger, nullable=True),
    Column("keyed", BigInteger, nullable=True),
)

# The audit events' task, actor, actor type and time, as an index filled a few thousand
# events at a time (proctor.audit.driver, in the writer's transaction, up to
# `audit_head.keyed`): one row per event and kind, `kind` "t" (the event's `task`), "a"
# (its `actor_id`), "y" (its `actor_type`) or "w" (its `time` as SQLite's column holds it,
# `YYYY-MM-DD HH:MM:SS.ffffff` UTC, which sorts as the times do; migration 0029). Without
# rowids on SQLite: the primary key's b-tree is the table.
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("kind", String(1), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

# One row per named audit stream: the position of the last event its collector
# acknowledged (``proctor.audit.streaming``); delivery resumes after it.
audit_stream_cursors = Table(
    "audit_stream_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("after_seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Signed statements "the event at `seq` has hash `hash`". `payload` is the
# canonical JSON that was signed (ES256, by the key `kid`).
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("kid", String(64), nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("payload", Text, nullable=False),
    Column("signature", Text, nullable=False),
)

# Signed archive cuts (proctor.audit.cuts): the events up to `through` were archived by
# `proctor audit archive`, whose statement, signed and chained to the checkpoints, is
# written in the transaction that deletes them (migration 0030).
audit_cuts = Table(
    "audit_cuts",
    metadata,
    Column("through", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("kid", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("signature", Text, nullable=False),
)

# Issuer signing keys. `sealed_key` is the PEM private key encrypted with the
# master key (AES-256-GCM, nonce prepended, kid as associated data), base64.
# The current key has no `verify_until`; a rotated key verifies until then.
issuer_keys = Table(
    "issuer_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("sealed_key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("verify_until", DateTime(timezone=True), nullable=True),
)

# Tasks: one unit of agent work. Ending a task revokes its lease tree.
tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("agent_id", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("on_behalf_of", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    # the highest data-sensitivity label (as its rank) an allowed call has read
    Column("sensitivity_seen", Integer, nullable=False, server_default="0"),
    # ended by itself at `expires_at` (its maximum lifetime), or at `idle_until`:
    # `idle_seconds` after the last use of one of its grants
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("idle_seconds", Integer, nullable=True),
    Column("idle_until", DateTime(timezone=True), nullable=True),
    Column("end_reason", Text, nullable=True),
    Index("ix_tasks_agent", "agent_id"),
    Index("ix_tasks_open_expiry", "ended_at", "expires_at"),
    Index("ix_tasks_open_idle", "ended_at", "idle_until"),
)

# The lease tree: tasks, grants, child grants (and later secret leases and
# gateway sessions), each under its parent. Indexed by parent so that revoking
# a node finds its subtree; `revoked_at` set on a node revokes it.
leases = Table(
    "leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("parent_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("agent_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    Index("ix_leases_parent", "parent_id"),
    Index("ix_leases_task", "task_id"),
    Index("ix_leases_agent", "agent_id"),
    Index("ix_leases_expires", "expires_at"),
)

# Grants: the token-specific part of a grant lease. Only the token's hash is
# kept; `accessor` names the grant everywhere else (API, audit, CLI).
grants = Table(
    "grants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("accessor", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scope", JSON, nullable=False),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False),
    # the RFC 7638 thumbprint of the key the grant is bound to (its `cnf.jkt`)
    Column("key_thumbprint", String(64), nullable=True),
)

# Offers: a grant decided for an agent that has no registered key, waiting for that
# agent to redeem it with its own identity proof and a proof of the key to bind it
# to. A delegator or an operator never chooses that key. `expires_at` is the
# grant's own expiry, fixed when the offer was made; `redeem_by` is the offer's.
grant_offers = Table(
    "grant_offers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("task_id", String(64), nullable=False),
    Column("parent_id", String(64), nullable=False),
    Column("agent_id", Text, nullable=False),
    Column("scope", JSON, nullable=False),
    Column("max_uses", Integer, nullable=True),
    Column("ancestors", JSON, nullable=False),
    Column("actor_chain", JSON, nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("redeem_by", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("redeemed_at", DateTime(timezone=True), nullable=True),
    Column("grant_id", String(64), nullable=True),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Index("ix_grant_offers_agent", "agent_id"),
    Index("ix_grant_offers_task", "task_id"),
)

# Tools discovered on upstream servers at run time (the gateway's tools/list), with
# the labels and input schema they were first seen with, so that every process
# that issues grants or decides calls knows them, not only the one that saw them.
# The pin columns (proctor.oversight.pinning): `pin_state` reviewed | unreviewed (a
# definition waits for a review; NULL: not pinned), `definition` the reviewed
# definition and `reviewed_digest` its digest (what a call's write compares the
# definition in hand with), `seen_definition` the one last seen when it differs,
# `pin_change` new | changed | renamed. `pin_state` and `seen_definition` tell what the
# last listing showed (reviewed | unreviewed | rejected); they never let a call through.
tool_catalog = Table(
    "tool_catalog",
    metadata,
    Column("tool_id", String(200), primary_key=True),
    Column("server", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("pin_state", String(16), nullable=True),
    Column("definition", JSON, nullable=True),
    Column("reviewed_digest", String(64), nullable=True),
    Column("seen_definition", JSON, nullable=True),
    Column("pin_change", String(16), nullable=True),
    Column("renamed_from", String(200), nullable=True),
    Column("changed_at", DateTime(timezone=True), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("reviewed_by", Text, nullable=True),
    Index("ix_tool_catalog_server", "server"),
)

# The inventory of connectors (proctor.oversight.inventory): upstream MCP servers,
# the SaaS behind them and OAuth apps, with their owner, scopes and where their
# credentials live; registered by hand, from gateway configs or from discovery.
connectors = Table(
    "connectors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # mcp_server | saas | oauth_app
    Column("name", Text, nullable=False),
    Column("owner", Text, nullable=True),
    Column("provider", String(64), nullable=True),
    Column("oauth", JSON, nullable=True),  # client_id, scopes, redirect_uris, credential
    Column("secrets", JSON, nullable=False),  # names in the secret store
    Column("servers", JSON, nullable=False),  # MCP server names whose tools it backs
    Column("source", String(16), nullable=False),  # registered | gateway | discover
    Column("plaintext_seen_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=True),
    Column("retired_by", Text, nullable=True),
)

# Proof-of-possession nonces already used, kept until the proof window passes. Every
# allowed call writes one: one b-tree (migration 0024), the nonce's, without rowids on
# SQLite and with no index on `expires_at` (the sweeper scans the table). `nonce` is the
# proof's time, its signer, then its nonce (`1796644800:<signer>:<nonce>`, accounting.nonce_key;
# migration 0026): the b-tree in the order proofs arrive, so that a batch's nonces share
# a leaf at its right edge rather than each taking one.
proof_nonces = Table(
    "proof_nonces",
    metadata,
    Column("nonce", String(140), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# Registered agents (proctor.identity). `id` is the SPIFFE ID. `manifest` is the
# manifest a human reviewed and `manifest_digest` its digest; an agent that
# presents another one gets `presented_*` filled and trust_state `drifted`,
# while the reviewed manifest stays as it was until a human adopts the new one.
# `public_jwk` holds public members only; `key_thumbprint` is its RFC 7638
# thumbprint (the `cnf` binding of grants).
agents = Table(
    "agents",
    metadata,
    Column("id", String(512), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("trust_domain", String(255), nullable=False),
    Column("owner", Text, nullable=False),
    Column("groups", JSON, nullable=False),
    Column("proof_method", String(16), nullable=False),
    Column("public_jwk", JSON, nullable=True),
    Column("key_thumbprint", String(64), nullable=True, unique=True),
    Column("oidc_issuer", Text, nullable=True),
    Column("oidc_subject", Text, nullable=True),
    Column("trust_state", String(16), nullable=False),
    Column("risk_score", Integer, nullable=False),
    Column("risk_factors", JSON, nullable=True),  # the factors a policy may name
    Column("manifest", JSON, nullable=False),
    Column("manifest_digest", String(80), nullable=False),
    Column("presented_manifest", JSON, nullable=True),
    Column("presented_digest", String(80), nullable=True),
    Column("reviewed_by", Text, nullable=False),
    Column("reviewed_at", DateTime(timezone=True), nullable=False),
    Column("state_changed_by", Text, nullable=True),
    Column("state_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_agents_trust_state", "trust_state"),
    Index("ux_agents_oidc_subject", "oidc_issuer", "oidc_subject", unique=True),
)

# Approval requests: bound to one exact call by `binding` (a digest of agent,
# task, tool, canonical arguments and grant); single use; expiring. `request`
# holds what the approver sees (masked arguments, reasons, chain, trust state).
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("binding", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("agent_id", Text, nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("tool_id", Text, nullable=False),
    Column("grant_id", String(64), nullable=False),
    Column("accessor", String(64), nullable=False),
    Column("on_behalf_of", Text, nullable=False),
    Column("request", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", Text, nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("comment", Text, nullable=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index("ix_approvals_binding", "binding"),
    Index("ix_approvals_status", "status", "created_at"),
    Index("ix_approvals_task", "task_id"),
)

# "Approve similar within this task": a grant (its scope, uses and expiry are in
# `grants` and `leases`) whose calls count as approved, for the task's agent.
# `arg_names` are the arguments the approved call had: a similar call has no others.
approval_grants = Table(
    "approval_grants",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("approval_id", String(64), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("agent_id", Text, nullable=False),
    Column("tool_id", Text, nullable=False),
    Column("arg_names", JSON, nullable=False),
    Column("approved_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_approval_grants_task", "task_id", "agent_id"),
)

# Web console sessions (proctor.server.console): only the cookie's SHA-256 is kept.
# `credential` is the API token a session was opened with (empty for OIDC): its
# revocation ends the session too.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("human_id", Text, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("method", String(16), nullable=False),
    Column("credential", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Control-plane bearer tokens for humans (proctor.server), starting with the admin
# token `proctor init` prints once. Only the token's SHA-256 is kept; `id` is the
# accessor that names it in listings, audit events and revocations.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("human_id", Text, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# One row (id 1): the candidate policy revision every server process shadows, or
# NULL for none. Each process picks a change up within its sync interval.
policy_shadow = Table(
    "policy_shadow",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", Integer, nullable=True),
    Column("changed_by", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)

# Requests on which the shadowed revision decided otherwise than the active one,
# from every process. No arguments or context are kept: only who, what, on what,
# and the two answers.
shadow_differences = Table(
    "shadow_differences",
    metadata,
    Column("id", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True,
           autoincrement=True),
    Column("revision", Integer, nullable=False),
    Column("active_revision", Integer, nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("principal", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("resource", Text, nullable=False),
    Column("active_outcome", String(24), nullable=False),
    Column("active_policies", JSON, nullable=False),
    Column("candidate_outcome", String(24), nullable=False),
    Column("candidate_policies", JSON, nullable=False),
    Index("ix_shadow_differences_revision", "revision", "id"),
)

# Downstream credentials (proctor.secrets), named in gateway configuration.
# `sealed_value` is the value sealed with the master key (proctor.sealing:
# AES-256-GCM; name and generation as associated data). `generation` is new on
# every put: a lease names the generation it was given, so replacing or
# deleting the secret ends its leases even where no notification arrives.
# No hash of the value is kept: a low-entropy value could be guessed from it.
secrets = Table(
    "secrets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("sealed_value", Text, nullable=False),
    Column("generation", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", Text, nullable=False),
)

# One row per secret lease: which secret (and generation) a `secret` node of
# the lease tree handed out. Indexed by name, so that replacing or deleting a
# secret finds its leases to revoke.
secret_leases = Table(
    "secret_leases",
    metadata,
    Column("lease_id", String(64), primary_key=True),
    Column("secret_name", String(128), nullable=False),
    Column("generation", String(32), nullable=False),
    Index("ix_secret_leases_name", "secret_name"),
)

# The change feed (proctor.store.changes): one row per change to what the
# in-process views hold, written by triggers in the changing transaction.
# `kind` is agent, task, lease or tool; `key` the changed row's id (`subtree`: the
# descendants one transaction marked revoked, keyed by a root).
changes = Table(
    "changes",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("key", Text, nullable=False),
    sqlite_autoincrement=True,
)

# Held by a transaction marking the descendants of a revoked node, on SQLite, and
# deleted before it commits: the change feed's trigger skips the rows it marks while
# the row is there (migration 0020); never seen by another connection.
lease_marking = Table(
    "lease_marking",
    metadata,
    Column("id", Integer, primary_key=True),
)

# Behaviour baselines (proctor.oversight.risk): per agent, the bounded state folded
# from the audit stream and its score (the factors of a score are computed from the
# baseline when they are asked for, so they are not stored); the position of the
# last audit event folded in is `audit_head.folded`.
risk_baselines = Table(
    "risk_baselines",
    metadata,
    Column("agent_id", String(512), primary_key=True),
    Column("baseline", JSON, nullable=False),
    Column("score", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Every definition of a tool seen and not reviewed, by its digest
# (proctor.oversight.pinning): `verdict` pending (waits for a human) | rejected (by
# `decided_by`, a human: denied whenever an upstream lists it, never reviewed);
# `change` new | changed | renamed as first seen; `listed_at` when a listing last
# showed it in place of another definition. A review deletes the row it accepts.
tool_definitions = Table(
    "tool_definitions",
    metadata,
    Column("tool_id", String(200), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("renamed_from", String(200), nullable=True),
    Column("server", String(64), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("change", String(16), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("listed_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("decided_by", Text, nullable=True),
    PrimaryKeyConstraint("tool_id", "digest"),
    Index("ix_tool_definitions_server", "server"),
)
