"""Human approvals, each bound to one exact call.

An approval request is created when a decision is ``approval_required``. It is
bound by :func:`binding_digest` to the agent, task, tool, canonical arguments and
grant of that call, so approving it approves that call and nothing else; it is
single use and expires. Only a human decides it (the caller authenticates the
human and checks the approver role); the agent's own owner may not, unless the
deployment allows it.

"Approve similar within this task" (:class:`SimilarApprovals`) approves the request
and issues a narrow pre-approval grant for the task: one tool, the arguments
pinned, short, use-limited and revocable in the lease tree — never a policy rule.
Every human channel decides through :class:`ApprovalDesk`, which takes separation
of duties from the deployment's policies (``@owner_may_approve``).
"""

from proctor.approvals.binding import binding_digest, canonical_arguments
from proctor.approvals.desk import (
    OWNER_ANNOTATION,
    ApprovalDesk,
    Decided,
    SimilarTerms,
    approval_json,
)
from proctor.approvals.queue import REQUESTED_ACTION, Approval, ApprovalQueue, ApprovalStatus
from proctor.approvals.similar import SimilarApprovals, SimilarGrant, similar_scope
from proctor.approvals.webhook import (
    WebhookConfig,
    WebhookDelivery,
    WebhookSink,
    load_webhook_config,
    sign,
    webhook_body,
)

__all__ = [
    "OWNER_ANNOTATION",
    "REQUESTED_ACTION",
    "Approval",
    "ApprovalDesk",
    "ApprovalQueue",
    "ApprovalStatus",
    "Decided",
    "SimilarApprovals",
    "SimilarGrant",
    "SimilarTerms",
    "WebhookConfig",
    "WebhookDelivery",
    "WebhookSink",
    "approval_json",
    "binding_digest",
    "canonical_arguments",
    "load_webhook_config",
    "sign",
    "similar_scope",
    "webhook_body",
]
