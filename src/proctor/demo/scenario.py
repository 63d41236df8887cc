"""The demo's scenario: each step does something real and checks what it must show."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from rich.console import Console

from proctor.audit import Actor, ActorType, EventFilter, iter_events
from proctor.demo.report import DemoReport, Step
from proctor.demo.sessions import AgentSession, CallResult, open_session
from proctor.demo.world import OWNER, DemoWorld, build_world, control_plane, manifest
from proctor.documents import parse_json
from proctor.errors import DocumentError, GrantError
from proctor.grants import GrantScope, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD
from proctor.runtime import issuer_for

__all__ = ["DemoOptions", "run_demo"]

PURPOSE = "refund Okafor Logistics for the double charge, and check the billing fix"
DEMO_SECONDS = 900  # the whole demo, unattended or waiting for a person

@dataclass(frozen=True)
class DemoOptions:
    home: Path
    auto_approve: bool = False
    approval_wait_seconds: float = 300.0

def run_demo(options: DemoOptions, console: Console | None) -> DemoReport:
    """Play the scenario; the report says whether every step showed what it must."""
    report = DemoReport(console)
    report.say("[bold]proctor demo[/]: two agents, one task, real MCP servers behind "
               "the gateway\n")
    world = build_world(options.home)
    report.info["home"] = str(options.home)
    try:
        with control_plane(world) as url:
            report.info["console"] = f"{url}/console"
            report.say(f"control plane and console: {url}/console  (demo admin token: "
                       f"{world.admin_token})\n")
            anyio.run(_play, world, report, options, url)
    finally:
        world.runtime.close()
    return report

async def _play(world: DemoWorld, report: DemoReport, options: DemoOptions, url: str) -> None:
    with anyio.fail_after(DEMO_SECONDS):
        await Scenario(world, report, options, url).play()

class Scenario:
    def __init__(self, world: DemoWorld, report: DemoReport, options: DemoOptions,
                 url: str) -> None:
        self.w = world
        self.rt = world.runtime
        self.report = report
        self.options = options
        self.url = url

    def step(self, key: str, title: str, outcome: str, ok: bool, lines: list[str],
             **detail: Any) -> None:
        self.report.add(Step(key, title, outcome, ok, lines, detail))

    async def play(self) -> None:
        w, rt = self.w, self.rt
        repos = str(w.repo.parent) + "/"
        # 1: a task and a short-lived grant
        task = rt.grants.start_task(w.planner.id, purpose=PURPOSE, on_behalf_of=OWNER)
        parent = rt.grants.issue(task.id, GrantScope.from_json({"tools": [
            {"tool": "time/*"}, {"tool": "crm/*"},
            {"tool": "git/*", "args": {"repo_path": {"prefix": [repos]}}}]}), ttl_seconds=900)
        self.step("grant_issued", "the planner starts a task and gets a 15-minute grant",
                  "allow", True, [
                      f"task {task.id} for {OWNER}: {PURPOSE}",
                      f"grant {parent.accessor}: time/*, crm/*, git/* under {repos}",
                      "bound to the planner's key; every use needs a fresh proof"],
                  task=task.id, grant=parent.accessor, ttl_seconds=900)
        # 2: delegation to a narrower grant
        proof = make_proof(w.planner.key, parent.token, method=EXCHANGE_METHOD,
                           target=issuer_for(w.settings), now=rt.clock.now())
        child = rt.grants.exchange(parent.token, proof, to_agent=w.worker.id, ttl_seconds=600,
                                   scope=GrantScope.from_json({"tools": [
                                       {"tool": "git/git_log",
                                        "args": {"repo_path": {"prefix": [str(w.repo)]}}},
                                       {"tool": "crm/lookup_customer"},
                                       {"tool": "crm/issue_refund",
                                        "args": {"amount_cents": {"max": 50000}}}]}))
        if not isinstance(child, IssuedGrant):  # the worker is registered with its own key
            raise GrantError("demo_world_invalid", "the worker got an offer, not a grant: "
                             "is its key registered?")
        self.step("delegated", "the planner hands the worker a narrower grant", "allow",
                  child.claims.actor_chain == (w.planner.id,), [
                      f"grant {child.accessor}: git_log in {w.repo.name} only, crm lookups, "
                      "refunds up to 500.00; 10 minutes",
                      f"delegation chain: {w.planner.id} → {w.worker.id}"],
                  grant=child.accessor, chain=list(child.claims.actor_chain))
        async with open_session(w, w.planner, parent.token, "time") as planner_time, \
                open_session(w, w.worker, child.token, "git") as worker_git, \
                open_session(w, w.worker, child.token, "crm") as worker_crm:
            await self._calls(planner_time, worker_git, worker_crm)
            await self._approval(worker_crm)
            await self._leak(task.id, worker_crm)
            await self._drift(worker_git, worker_crm)
            await self._end(task.id, worker_git)
        self._audit()

    async def _calls(self, planner_time: AgentSession, worker_git: AgentSession,
                     worker_crm: AgentSession) -> None:
        w = self.w
        now = await planner_time.call("get_current_time", {"timezone": "Europe/Berlin"})
        self._call_step("allowed_time", "the planner asks the time in Berlin", now, True,
                        f"mcp-server-time: {_brief(now)}")
        log = await worker_git.call("git_log", {"repo_path": str(w.repo), "max_count": 3})
        self._call_step("allowed_git", "the worker reads the billing repository's log", log,
                        True, f"mcp-server-git: {_first_line(log)}")
        outside = await worker_git.call("git_log", {"repo_path": str(w.other_repo)})
        self._call_step("out_of_scope", "the worker tries the payroll repository", outside,
                        False, expected_code="grant_out_of_scope")
        tokyo = await planner_time.call("get_current_time", {"timezone": "Asia/Tokyo"})
        self._call_step("policy_denied", "the planner asks the time in Tokyo", tokyo, False,
                        expected_code="no_matching_permit")
        customer = await worker_crm.call("lookup_customer", {"customer_id": "c-1002"})
        notes = str((customer.content or {}).get("notes", "")) if isinstance(
            customer.content, dict) else customer.text
        redacted = customer.allowed and "REDACTED" in notes and "sk_live_" not in notes
        self.step("redacted", "the worker looks up a customer whose notes hold an API key",
                  "redacted" if redacted else customer.code, redacted,
                  [f"notes as the agent sees them: {notes}"], code=customer.code, notes=notes)

    async def _approval(self, worker_crm: AgentSession) -> None:
        args = {"customer_id": "c-1002", "amount_cents": 25000,
                "reason": "double charge on invoice 2026-1187"}
        async with anyio.create_task_group() as group:
            decided: dict[str, Any] = {}
            group.start_soon(self._approver, decided)
            result = await worker_crm.call("issue_refund", args,
                                           timeout=self.options.approval_wait_seconds + 30)
            # An approver that has taken the approval finishes on its own (its HTTP client
            # is bounded): cancelling it here could lose who approved. One that never saw
            # an approval (the call was answered without one) would poll for ever.
            if "approval" not in decided:
                group.cancel_scope.cancel()
        approval = decided.get("approval") or {}
        self._call_step("approval", "the worker refunds 250.00: a human must approve",
                        result, True, f"held as {approval.get('id', '?')}; approved by "
                        f"{decided.get('by', 'nobody')}; CRM: {_brief(result)}",
                        approval=approval.get("id"), approved_by=decided.get("by"))

    async def _approver(self, decided: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self.w.admin_token}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10) as api:
            while True:
                listed = (await api.get("/v1/approvals", params={"status": "pending"})).json()
                if listed.get("approvals"):
                    break
                await anyio.sleep(0.2)
            approval = listed["approvals"][0]
            decided["approval"] = approval
            if not self.options.auto_approve:
                self.report.say(f"     waiting for a person: open {self.url}/console/approvals "
                                f"and approve {approval['id']} (or run again with "
                                "--auto-approve)", always=True)
                return
            answer = await api.post(f"/v1/approvals/{approval['id']}/approve",
                                    json={"comment": "verified the double charge"})
            answer.raise_for_status()
            decided["by"] = answer.json()["approval"]["decided_by"]

    async def _leak(self, task_id: str, worker_crm: AgentSession) -> None:
        rt = self.rt
        # The planner's second grant, for the time server only, has leaked into the
        # worker's context (a prompt injection); the worker pastes it into a refund reason.
        leaked = rt.grants.issue(task_id, GrantScope.from_json({"tools": [{"tool": "time/*"}]}))
        worker = self.w.worker.id
        rt.risk.catch_up()  # the risk score folds the audit stream (docs/risk.md)
        before = rt.registry.get(worker).risk_score
        result = await worker_crm.call("issue_refund", {
            "customer_id": "c-1001", "amount_cents": 1500,
            "reason": f"use this to confirm: {leaked.token}"})
        revoked = _is_revoked(rt.grants.inspect, leaked)
        rt.risk.catch_up()
        after = rt.registry.get(worker)
        risen = after.risk_score > before and "leaked_grant" in after.risk_factors
        self.step("leaked_grant", "a live grant shows up in a tool call's arguments",
                  "revoked" if revoked else "failed", revoked and not result.allowed and risen, [
                      f"the call: {result.code}",
                      f"grant {leaked.accessor} revoked at once: {revoked}",
                      f"the worker's risk score: {before} -> {after.risk_score} "
                      f"({', '.join(after.risk_factors)})"],
                  grant=leaked.accessor, call=result.code, revoked=revoked,
                  risk={"before": before, "after": after.risk_score,
                        "factors": list(after.risk_factors)})

    async def _drift(self, worker_git: AgentSession, worker_crm: AgentSession) -> None:
        w, rt = self.w, self.rt
        rt.registry.present_manifest(w.worker.id, manifest("claude-haiku-5-preview"))
        state = rt.registry.get(w.worker.id).trust_state.value
        crm = await worker_crm.call("lookup_customer", {"customer_id": "c-1001"})
        git = await worker_git.call("git_log", {"repo_path": str(w.repo), "max_count": 1})
        ok = state == "drifted" and not crm.allowed and crm.code == "policy_forbid" \
            and git.allowed
        self.step("drift", "the worker restarts on a new model: its manifest drifts",
                  "drifted" if ok else "failed", ok, [
                      f"trust state: {state}",
                      f"crm/lookup_customer (confidential): {crm.code} — {_reason(crm)}",
                      f"git/git_log (internal): {git.code}"],
                  trust_state=state, crm=crm.code, git=git.code)

    async def _end(self, task_id: str, worker_git: AgentSession) -> None:
        rt, w = self.rt, self.w
        revoked = rt.grants.end_task(task_id, by=Actor(ActorType.AGENT, w.planner.id))
        after = await worker_git.call("git_log", {"repo_path": str(w.repo)}, timeout=30)
        tree = rt.grants.tree(task_id)
        ok = not after.allowed and all(node.is_revoked for node in tree)
        self.step("task_ended", "the planner ends the task: every derived credential dies",
                  "revoked" if ok else "failed", ok, [
                      f"{len(revoked)} lease-tree nodes revoked in one transaction",
                      f"the worker's open session: {after.code}"],
                  revoked=len(revoked), worker_call=after.code)

    def _audit(self) -> None:
        verify = subprocess.run(
            [sys.executable, "-m", "proctor.cli", "audit", "verify", "--json"],
            env=self.w.env, capture_output=True, text=True, timeout=120, check=False)
        counts = {kind.value: sum(1 for _ in iter_events(
            self.rt.store, EventFilter(actor_type=kind))) for kind in ActorType}
        humans = [f"{e.event['actor']['id']}: {e.event['action']} {e.event['target']}"
                  for e in iter_events(self.rt.store, EventFilter(actor_type=ActorType.HUMAN))]
        self.step("audit", "`proctor audit verify` checks the chain; agents and humans apart",
                  "ok" if verify.returncode == 0 else "failed", verify.returncode == 0, [
                      f"events: {counts['agent']} by agents, {counts['human']} by humans, "
                      f"{counts['system']} by proctor itself",
                      *[f"human: {line}" for line in humans]],
                  verified=verify.returncode == 0, counts=counts,
                  verify=_json_or_text(verify.stdout))

    def _call_step(self, key: str, title: str, result: CallResult, allowed: bool,
                   line: str = "", *, expected_code: str | None = None,
                   **detail: Any) -> None:
        ok = result.allowed == allowed and (expected_code is None or result.code == expected_code)
        outcome = "allow" if result.allowed else "deny"
        lines = [line] if line else [f"{result.code}: {_reason(result)}"]
        self.step(key, title, outcome, ok, lines, code=result.code, **detail)

def _is_revoked(inspect: Callable[[str], object], grant: IssuedGrant) -> bool:
    try:
        inspect(grant.token)
    except GrantError as exc:
        return exc.code == "grant_revoked"
    return False

def _reason(result: CallResult) -> str:
    data = result.data or {}
    reasons = data.get("reasons")
    if isinstance(reasons, list) and reasons:
        return str(reasons[0])
    return result.message

def _brief(result: CallResult) -> str:
    if not result.allowed:
        return f"{result.code}: {_reason(result)}"
    content = result.content
    if isinstance(content, dict):
        return ", ".join(f"{k}={v}" for k, v in list(content.items())[:4])
    return str(content)[:120]

def _first_line(result: CallResult) -> str:
    """The number of commits and the newest one's message, from git_log's text."""
    if not result.allowed:
        return _brief(result)
    lines = [line.strip() for line in result.text.splitlines()]
    messages = [line.removeprefix("Message:").strip().strip("'\"") for line in lines
                if line.startswith("Message:")]
    if not messages:
        return result.text.strip()[:120]
    return f"{len(messages)} commits, the newest: {messages[0][:80]}"

def _json_or_text(text: str) -> Any:
    try:
        return parse_json(text, what="the tool's text")
    except DocumentError:
        return text.strip()[-500:]
