"""The requests ``proctor demo`` plays against the example deployment."""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_REQUESTS"]

_CODER = "spiffe://acme.example/agent/coder"
_SUPPORT = "spiffe://acme.example/agent/support"
_FINANCE = "spiffe://acme.example/agent/finance"

# (what the step shows, the request document)
DEMO_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("the coding agent reads the log of a repository it works on",
     {"agent": _CODER, "tool": "git/git_log", "args": {"repo_path": "/srv/repos/app"},
      "purpose": "fix the failing build", "on_behalf_of": "alice@acme.example"}),
    ("the coding agent tries a repository outside its scope",
     {"agent": _CODER, "tool": "git/git_log", "args": {"repo_path": "/etc"},
      "purpose": "fix the failing build", "on_behalf_of": "alice@acme.example"}),
    ("the support agent refunds a small amount",
     {"agent": _SUPPORT, "tool": "crm/issue_refund",
      "args": {"customer_id": "c-1001", "amount_cents": 2500},
      "on_behalf_of": "bob@acme.example"}),
    ("the support agent refunds a large amount: a human must approve",
     {"agent": _SUPPORT, "tool": "crm/issue_refund",
      "args": {"customer_id": "c-1001", "amount_cents": 25000},
      "on_behalf_of": "bob@acme.example"}),
    ("the finance agent creates a payment: a human must approve",
     {"agent": _FINANCE, "tool": "payments/create_payment",
      "args": {"payee": "ACME Supplies GmbH", "amount_cents": 120000, "currency": "EUR"},
      "purpose": "pay invoice 2026-1187", "on_behalf_of": "carol@acme.example"}),
    ("after reading restricted data, the support agent tries to email outside",
     {"agent": _SUPPORT, "tool": "email/send_email",
      "args": {"to": "someone@example.org", "subject": "notes", "body": "..."},
      "sensitivity_seen": "restricted", "on_behalf_of": "bob@acme.example"}),
]
