"""Task grants: short-lived, key-bound, scoped credentials; delegation; the lease tree.

>>> from proctor.grants import GrantScope
>>> scope = GrantScope.from_json({"tools": [{"tool": "git/*"}]})
>>> scope.allows("git/git_log", {}), scope.allows("crm/issue_refund", {})
(True, False)
"""

from proctor.grants.authority import (
    AgentBinding,
    AgentDirectory,
    CheckedGrant,
    GrantAuthority,
    IssuedGrant,
    Task,
)
from proctor.grants.directory import RegisteredAgents
from proctor.grants.keyring import IssuerKey, IssuerKeyring, load_master_key
from proctor.grants.leases import LeaseNode, LeaseTree
from proctor.grants.proofs import jwk_thumbprint, make_proof, verify_proof
from proctor.grants.scope import ArgConstraint, GrantScope, ToolScope
from proctor.grants.subscription import RevocationSubscription
from proctor.grants.tokens import GrantClaims, TokenCodec, token_hash

__all__ = [
    "AgentBinding",
    "AgentDirectory",
    "ArgConstraint",
    "CheckedGrant",
    "GrantAuthority",
    "GrantClaims",
    "GrantScope",
    "IssuedGrant",
    "IssuerKey",
    "IssuerKeyring",
    "LeaseNode",
    "LeaseTree",
    "RegisteredAgents",
    "RevocationSubscription",
    "Task",
    "TokenCodec",
    "ToolScope",
    "jwk_thumbprint",
    "load_master_key",
    "make_proof",
    "token_hash",
    "verify_proof",
]
