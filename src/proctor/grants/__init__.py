"""Task grants: short-lived, key-bound, scoped credentials; delegation; the lease tree.

>>> from proctor.grants import GrantScope
>>> scope = GrantScope.from_json({"tools": [{"tool": "git/*"}]})
>>> scope.allows("git/git_log", {}), scope.allows("crm/issue_refund", {})
(True, False)
"""

from proctor.grants.agents import AgentBinding, AgentDirectory
from proctor.grants.authority import CheckedGrant, GrantAuthority, Swept
from proctor.grants.directory import RegisteredAgents
from proctor.grants.holders import HeldGrant, HolderProof
from proctor.grants.issuance import IssuedGrant
from proctor.grants.keyring import IssuerKey, IssuerKeyring, load_master_key
from proctor.grants.leases import LeaseNode, LeaseTree, in_force
from proctor.grants.offers import GrantOffer
from proctor.grants.proofs import PROOF_ALGORITHMS, jwk_thumbprint, make_proof, verify_proof
from proctor.grants.scope import ArgConstraint, GrantScope, ToolScope
from proctor.grants.subscription import RevocationSubscription
from proctor.grants.tasks import Task, TaskLimits
from proctor.grants.tokens import GrantClaims, TokenCodec, token_hash
from proctor.grants.use import GrantUse
from proctor.grants.view import RevocationView, TaskView

__all__ = [
    "PROOF_ALGORITHMS",
    "AgentBinding",
    "AgentDirectory",
    "ArgConstraint",
    "CheckedGrant",
    "GrantAuthority",
    "GrantClaims",
    "GrantOffer",
    "GrantScope",
    "GrantUse",
    "HeldGrant",
    "HolderProof",
    "IssuedGrant",
    "IssuerKey",
    "IssuerKeyring",
    "LeaseNode",
    "LeaseTree",
    "RegisteredAgents",
    "RevocationSubscription",
    "RevocationView",
    "Swept",
    "Task",
    "TaskLimits",
    "TaskView",
    "TokenCodec",
    "ToolScope",
    "in_force",
    "jwk_thumbprint",
    "load_master_key",
    "make_proof",
    "token_hash",
    "verify_proof",
]
