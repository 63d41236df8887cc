"""proctor's agent-side SDK: the agent's key, its tasks and grants, a decision per tool
call, and adapters for agent frameworks.

It talks to ``proctor serve`` over HTTP only and imports nothing of the server side (no
store, no master key, no Cedar): ``httpx`` and ``cryptography`` are all it needs. The
framework adapters are modules of their own, imported only by who uses them:
:mod:`proctor.client.mcp`, :mod:`proctor.client.openai_agents`,
:mod:`proctor.client.langchain`.
"""

from proctor.client.aio import AsyncProctorClient
from proctor.client.auth import AgentAuth
from proctor.client.errors import (
    ApprovalDeniedError,
    ApprovalTimeoutError,
    CallRefusedError,
    ClientError,
)
from proctor.client.guard import Guard, current_guard, guarded, json_arguments
from proctor.client.keys import AgentKey
from proctor.client.protocol import DEAD_GRANT_CODES
from proctor.client.sync import ProctorClient
from proctor.client.values import ApprovalRef, Grant, Task, Verdict

__all__ = [
    "DEAD_GRANT_CODES",
    "AgentAuth",
    "AgentKey",
    "ApprovalDeniedError",
    "ApprovalRef",
    "ApprovalTimeoutError",
    "AsyncProctorClient",
    "CallRefusedError",
    "ClientError",
    "Grant",
    "Guard",
    "ProctorClient",
    "Task",
    "Verdict",
    "current_guard",
    "guarded",
    "json_arguments",
]
