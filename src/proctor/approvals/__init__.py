"""Human approvals, each bound to one exact call.

An approval request is created when a decision is ``approval_required``. It is
bound by :func:`binding_digest` to the agent, task, tool, canonical arguments and
grant of that call, so approving it approves that call and nothing else; it is
single use and expires. Only a human decides it (the caller authenticates the
human and checks the approver role); the agent's own owner may not, unless the
deployment allows it.
"""

from proctor.approvals.binding import binding_digest, canonical_arguments
from proctor.approvals.queue import Approval, ApprovalQueue, ApprovalStatus

__all__ = [
    "Approval",
    "ApprovalQueue",
    "ApprovalStatus",
    "binding_digest",
    "canonical_arguments",
]
