"""``proctor demo``: the whole idea, end to end, on the embedded default.

A planner agent and a worker agent, a task, a grant and a narrower delegated
grant, calls through the MCP gateway (``proctor mcp wrap``) to real MCP servers
(``mcp-server-time``, ``mcp-server-git`` on a fresh repository, and a small CRM),
a call held for a human's approval in the console, a secret redacted from a
result, a leaked grant revoked on sight, an agent that drifts, the end of the
task, and the audit log verified — each step checked against what it must show.
"""

from proctor.demo.report import DemoReport, Step
from proctor.demo.scenario import DemoOptions, run_demo

__all__ = ["DemoOptions", "DemoReport", "Step", "run_demo"]
