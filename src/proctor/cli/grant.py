"""``proctor task`` and ``proctor grant``: tasks, and the grants issued under them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

from proctor.audit import Actor, ActorType
from proctor.cli.output import console, fail, print_json
from proctor.cli.runtime import Runtime, open_runtime, operator_name
from proctor.config import load_settings
from proctor.documents import parse_json, parse_yaml
from proctor.errors import DocumentError, ProctorError, ScopeError
from proctor.files import read_capped
from proctor.grants import GrantClaims, GrantScope, IssuedGrant, LeaseNode
from proctor.identity import agent_id_for

__all__ = ["grant_app", "task_app"]

task_app = typer.Typer(no_args_is_help=True, help="Start and end tasks.")
grant_app = typer.Typer(no_args_is_help=True, help="Issue, exchange, check and revoke grants.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ScopeOpt = Annotated[str, typer.Option(
    "--scope", help="The scope: a JSON document, or @FILE (JSON or YAML).")]
TtlOpt = Annotated[int | None, typer.Option("--ttl", help="Seconds (default 300, max 3600).")]
UsesOpt = Annotated[int | None, typer.Option("--max-uses", help="Uses before it is spent.")]
ByOpt = Annotated[str | None, typer.Option(
    "--by", help="The human doing this, for the audit log (default: the login name).")]
_MAX_SCOPE_BYTES = 64 * 1024


@contextmanager
def _runtime(as_json: bool) -> Iterator[Runtime]:
    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        yield runtime
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()


def _scope(text: str) -> GrantScope:
    if text.startswith("@"):
        raw = read_capped(Path(text[1:]), _MAX_SCOPE_BYTES, "scope file", ScopeError)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScopeError(f"scope file `{text[1:]}` is not UTF-8") from exc
    try:
        data = parse_yaml(text, what="scope", max_bytes=_MAX_SCOPE_BYTES)  # JSON is YAML
    except DocumentError as exc:
        raise ScopeError(exc.message) from exc
    return GrantScope.from_json(data)


def _claims_json(claims: GrantClaims) -> dict[str, Any]:
    return {
        "grant_id": claims.grant_id, "agent": claims.agent_id, "task": claims.task_id,
        "expires_at": datetime.fromtimestamp(claims.expires_at, UTC).isoformat(),
        "scope": claims.scope.as_json(), "key_thumbprint": claims.key_thumbprint,
        "ancestors": list(claims.ancestors), "actor_chain": list(claims.actor_chain),
    }


def _print_issued(grant: IssuedGrant, as_json: bool) -> None:
    info = {"token": grant.token, "accessor": grant.accessor, **_claims_json(grant.claims)}
    if as_json:
        print_json(info)
        return
    console.print(f"grant {grant.accessor} for {grant.claims.agent_id}, "
                  f"expires {info['expires_at']}", markup=False)
    console.print("token (give it to the agent only; proctor keeps just its hash):")
    console.print(grant.token, markup=False, soft_wrap=True)


@task_app.command("start")
def start_task(
    agent: Annotated[str, typer.Argument(
        help="The agent: its SPIFFE ID, or its name in this trust domain.")],
    purpose: Annotated[str, typer.Option("--purpose", help="What the task is for.")],
    on_behalf_of: Annotated[str, typer.Option("--on-behalf-of", help="The human it acts for.")],
    as_json: JsonOpt = False,
) -> None:
    """Start a task for an agent."""
    with _runtime(as_json) as rt:
        agent_id = agent_id_for(agent, rt.settings.trust_domain).id
        task = rt.grants.start_task(agent_id, purpose=purpose, on_behalf_of=on_behalf_of)
    if as_json:
        print_json({"task": task.id, "agent": task.agent_id, "purpose": task.purpose,
                    "on_behalf_of": task.on_behalf_of, "started_at": task.started_at})
    else:
        console.print(f"task {task.id} started for {task.agent_id}", markup=False)


@task_app.command("end")
def end_task(task: Annotated[str, typer.Argument(help="The task id.")], by: ByOpt = None,
             as_json: JsonOpt = False) -> None:
    """End a task: every grant issued under it is revoked."""
    with _runtime(as_json) as rt:
        revoked = rt.grants.end_task(task, by=Actor(ActorType.HUMAN, operator_name(by)))
    if as_json:
        print_json({"task": task, "revoked": revoked})
    else:
        console.print(f"task {task} ended; {len(revoked)} nodes revoked", markup=False)


@grant_app.command("issue")
def issue(task: Annotated[str, typer.Option("--task", help="The task id.")], scope: ScopeOpt,
          ttl: TtlOpt = None, max_uses: UsesOpt = None,
          holder_proof: Annotated[str | None, typer.Option(
              "--holder-proof", help="For agents without a registered key.")] = None,
          as_json: JsonOpt = False) -> None:
    """Issue a grant for a task's agent, if policy allows it."""
    with _runtime(as_json) as rt:
        grant = rt.grants.issue(task, _scope(scope), ttl_seconds=ttl, max_uses=max_uses,
                                holder_proof=holder_proof)
    _print_issued(grant, as_json)


@grant_app.command("exchange")
def exchange(
    token: TokenArg,
    proof: Annotated[str, typer.Option("--proof", help="The holder's proof for the exchange.")],
    to: Annotated[str, typer.Option("--to", help="The agent receiving the child grant.")],
    scope: ScopeOpt, ttl: TtlOpt = None, max_uses: UsesOpt = None,
    holder_proof: Annotated[str | None, typer.Option("--holder-proof")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Delegate: trade a grant for a narrower one for another agent."""
    token = _token(token)
    with _runtime(as_json) as rt:
        grant = rt.grants.exchange(token, proof, to_agent=to, scope=_scope(scope),
                                   ttl_seconds=ttl, max_uses=max_uses,
                                   holder_proof=holder_proof)
    _print_issued(grant, as_json)


TokenArg = Annotated[str, typer.Argument(
    help="The grant, or `-` to read it from standard input (keeps it out of `ps` and history).")]


def _token(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


@grant_app.command("check")
def check(
    token: TokenArg,
    proof: Annotated[str | None, typer.Option("--proof", help="A proof for one use.")] = None,
    method: Annotated[str, typer.Option("--method")] = "tools/call",
    target: Annotated[str | None, typer.Option("--target")] = None,
    tool: Annotated[str | None, typer.Option("--tool", help="server/tool")] = None,
    args: Annotated[str, typer.Option("--args", help="The call's arguments, JSON.")] = "{}",
    as_json: JsonOpt = False,
) -> None:
    """Check a grant: without --proof, whether it is valid now; with it, one use."""
    token = _token(token)
    with _runtime(as_json) as rt:
        if proof is None:
            claims = rt.grants.inspect(token)
        else:
            try:
                call_args = parse_json(args, what="`--args`")
            except DocumentError:
                call_args = None
            if not isinstance(call_args, dict):
                fail("`--args` must be a JSON object", code="request_invalid", as_json=as_json)
            claims = rt.grants.check(token, proof, method=method, target=target or "",
                                     tool_id=tool, args=call_args).claims
    if as_json:
        print_json({"valid": True, **_claims_json(claims)})
    else:
        console.print(f"valid: grant {claims.grant_id} of {claims.agent_id}", markup=False)


@grant_app.command("revoke")
def revoke(grant: Annotated[str, typer.Argument(help="The grant's accessor or id.")],
           reason: Annotated[str, typer.Option("--reason")] = "revoked by an operator",
           by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a grant and everything derived from it."""
    with _runtime(as_json) as rt:
        revoked = rt.grants.revoke(grant, reason, by=Actor(ActorType.HUMAN, operator_name(by)))
    if as_json:
        print_json({"revoked": revoked})
    else:
        console.print(f"{len(revoked)} nodes revoked", markup=False)


@grant_app.command("tree")
def tree(task: Annotated[str, typer.Argument(help="The task id.")],
         as_json: JsonOpt = False) -> None:
    """Show a task's lease tree: its grants and what was delegated from them."""
    with _runtime(as_json) as rt:
        rt.grants.task(task)
        nodes = rt.grants.tree(task)
    if as_json:
        print_json({"task": task, "nodes": [_node_json(n) for n in nodes]})
        return
    branches: dict[str, Tree] = {}
    root: Tree | None = None
    for node in nodes:
        label = (f"{node.kind} {node.id} {node.agent_id}"
                 + (f" [red]revoked: {node.revoked_reason}[/]" if node.is_revoked else ""))
        parent = branches.get(node.parent_id or "")
        branch = parent.add(label) if parent is not None else Tree(label)
        root = root or branch
        branches[node.id] = branch
    if root is not None:
        console.print(root)


def _node_json(node: LeaseNode) -> dict[str, Any]:
    return {"id": node.id, "parent": node.parent_id, "kind": node.kind, "agent": node.agent_id,
            "expires_at": node.expires_at, "revoked_at": node.revoked_at,
            "revoked_reason": node.revoked_reason}
