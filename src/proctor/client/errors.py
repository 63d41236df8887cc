"""What the agent's host application sees when proctor says no, or cannot be asked.

::

    ProctorError (proctor.errors)
    └── ClientError                    the server cannot be asked, or refused the request
        │                              (``code``: ``server_unavailable``, ``answer_invalid``,
        │                              or the API problem's own code)
        └── CallRefusedError           a tool call that must not run: denied, its grant
            │                          revoked, no answer (``code`` is proctor's, or
            │                          ``guard_missing``, ``arguments_invalid``)
            ├── ApprovalDeniedError    a human denied it (``approval_denied``)
            └── ApprovalTimeoutError   no human decided in time (``approval_timeout``);
                                       names the approval, so the agent can ask again

A refusal is never silent and never an allow: every framework adapter turns a
:class:`CallRefusedError` into that framework's own refusal, with the code and reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proctor.codes import Code, known
from proctor.errors import ProctorError

if TYPE_CHECKING:
    from proctor.client.values import Verdict

__all__ = ["ApprovalDeniedError", "ApprovalTimeoutError", "CallRefusedError", "ClientError",
           "wire_code"]


def wire_code(text: str) -> Code:
    """A code the server sent: itself if proctor knows it, else ``answer_invalid``."""
    return known(text) or "answer_invalid"


class ClientError(ProctorError):
    """The server could not be asked, or answered with a problem (``status``, ``code``)."""

    def __init__(self, code: Code, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class CallRefusedError(ClientError):
    """The call must not run. ``verdict`` is proctor's answer when there was one."""

    def __init__(self, tool: str, code: Code, reason: str, *,
                 verdict: Verdict | None = None) -> None:
        super().__init__(code, f"`{tool}` refused by proctor ({code}): {reason}")
        self.tool = tool
        self.reason = reason
        self.verdict = verdict

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return self.verdict.policy_ids if self.verdict is not None else ()


class ApprovalDeniedError(CallRefusedError):
    def __init__(self, tool: str, approval_id: str, reason: str) -> None:
        super().__init__(tool, "approval_denied", f"approval `{approval_id}` was denied: {reason}")
        self.approval_id = approval_id


class ApprovalTimeoutError(CallRefusedError):
    def __init__(self, tool: str, approval_id: str, waited_seconds: float) -> None:
        super().__init__(tool, "approval_timeout", (
            f"approval `{approval_id}` was not decided within {waited_seconds:g} s; "
            "ask again once a human has decided it"))
        self.approval_id = approval_id
