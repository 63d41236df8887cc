"""``proctor task`` and ``proctor grant``: tasks, and the grants issued under them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.tree import Tree

from proctor.cli.operator import Acting, ByOpt, acting_runtime
from proctor.cli.output import console, fail, print_json
from proctor.config import load_settings
from proctor.documents import parse_json, parse_yaml
from proctor.errors import DocumentError, ProctorError, RequestError, ScopeError
from proctor.files import read_capped

if TYPE_CHECKING:
    from proctor.audit import AuditEvent
    from proctor.grants import (
        GrantClaims,
        GrantOffer,
        GrantScope,
        IssuedGrant,
        LeaseNode,
    )
    from proctor.runtime import Runtime

__all__ = ["grant_app", "task_app"]

task_app = typer.Typer(no_args_is_help=True, help="Start and end tasks.")
grant_app = typer.Typer(no_args_is_help=True, help="Issue, exchange, check and revoke grants.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ScopeOpt = Annotated[str, typer.Option(
    "--scope", help="The scope: a JSON document, or @FILE (JSON or YAML).")]
TtlOpt = Annotated[int | None, typer.Option("--ttl", help="Seconds (default 300, max 3600).")]
UsesOpt = Annotated[int | None, typer.Option("--max-uses", help="Uses before it is spent.")]
_MAX_SCOPE_BYTES = 64 * 1024


@contextmanager
def _runtime(as_json: bool) -> Iterator[Runtime]:
    from proctor.runtime import open_runtime

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
    from proctor.grants import GrantScope

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
    return GrantScope.from_request(data)


def _claims_json(claims: GrantClaims) -> dict[str, Any]:
    return {
        "grant_id": claims.grant_id, "agent": claims.agent_id, "task": claims.task_id,
        "expires_at": datetime.fromtimestamp(claims.expires_at, UTC).isoformat(),
        "scope": claims.scope.as_json(), "key_thumbprint": claims.key_thumbprint,
        "ancestors": list(claims.ancestors), "actor_chain": list(claims.actor_chain),
    }


def _print_offer(offer: GrantOffer, as_json: bool) -> None:
    if as_json:
        print_json({"kind": "offer", **offer.as_json()})
        return
    console.print(f"offer {offer.id} for {offer.agent_id}, to redeem by "
                  f"{offer.redeem_by.isoformat()}", markup=False)
    console.print("the agent has no registered key: it redeems the offer with its own "
                  "identity proof and a key of its own (`proctor grant redeem`)", markup=False)


def _print_made(made: IssuedGrant | GrantOffer, as_json: bool) -> None:
    from proctor.grants import GrantOffer

    if isinstance(made, GrantOffer):
        _print_offer(made, as_json)
    else:
        _print_issued(made, as_json)


def _text_or_file(value: str | None) -> str | None:
    """An option's value as given, or the contents of @FILE (kept out of `ps`)."""
    if value is None or not value.startswith("@"):
        return value
    raw = read_capped(Path(value[1:]), 16 * 1024, "file", RequestError)
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise RequestError(f"`{value[1:]}` is not a token") from exc


def _print_issued(grant: IssuedGrant, as_json: bool) -> None:
    info = {"kind": "grant", "token": grant.token, "accessor": grant.accessor,
            **_claims_json(grant.claims)}
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
    ttl: Annotated[int | None, typer.Option(
        "--ttl", help="Seconds before the task ends by itself (default and most: "
        "task_max_seconds, 8 hours unless configured).")] = None,
    idle: Annotated[int | None, typer.Option(
        "--idle", help="Seconds without a call before the task ends by itself (default and "
        "most: task_idle_seconds, 30 minutes unless configured).")] = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Start a task for an agent."""
    from proctor.identity import agent_id_for
    from proctor.oversight.starting import start_task

    with acting_runtime(by, as_json) as (rt, acting):
        agent_id = agent_id_for(agent, rt.settings.trust_domain).id
        # with its event, in one transaction; unaudited: no task
        task = start_task(rt.grants, rt.audit, agent_id, by=acting.operator.actor, purpose=purpose,
                          on_behalf_of=on_behalf_of, ttl_seconds=ttl, idle_seconds=idle,
                          source="cli")
    if as_json:
        print_json({"task": task.id, "agent": task.agent_id, "purpose": task.purpose,
                    "on_behalf_of": task.on_behalf_of, "started_at": task.started_at,
                    "expires_at": task.expires_at, "idle_seconds": task.idle_seconds})
    else:
        console.print(f"task {task.id} started for {task.agent_id}", markup=False)


@task_app.command("end")
def end_task(task: Annotated[str, typer.Argument(help="The task id.")], by: ByOpt = None,
             as_json: JsonOpt = False) -> None:
    """End a task: every grant issued under it is revoked."""
    with acting_runtime(by, as_json) as (rt, acting):
        revoked = rt.grants.end_task(task, by=acting.operator.actor)
    if as_json:
        print_json({"task": task, "revoked": revoked})
    else:
        console.print(f"task {task} ended; {len(revoked)} nodes revoked", markup=False)


HolderProofOpt = Annotated[str | None, typer.Option(
    "--holder-proof", help="A proof (htm grant/issue, htu the issuer) signed by the key to bind "
    "the grant to; with --identity-proof, its ath is that proof's hash. Or @FILE.")]
IdentityProofOpt = Annotated[str | None, typer.Option(
    "--identity-proof", help="The agent's own identity proof (its JWT-SVID or OIDC token), "
    "for an agent without a registered key. Or @FILE.")]


@grant_app.command("issue")
def issue(task: Annotated[str, typer.Option("--task", help="The task id.")], scope: ScopeOpt,
          ttl: TtlOpt = None, max_uses: UsesOpt = None, holder_proof: HolderProofOpt = None,
          identity_proof: IdentityProofOpt = None, by: ByOpt = None,
          as_json: JsonOpt = False) -> None:
    """Issue a grant for a task's agent, if policy allows it.

    For an agent without a registered key (JWT-SVID, OIDC) and without its own proofs
    given here, the answer is an offer that the agent redeems (`proctor grant redeem`).
    """
    from proctor.grants import HolderProof

    with acting_runtime(by, as_json) as (rt, acting):
        agent = rt.registry.get(rt.grants.task(task).agent_id)
        made: IssuedGrant | GrantOffer
        # with the operator's event, in one write; unaudited: nothing made
        asked = _asked(acting, "grant.issue")
        if agent.key_thumbprint is None and holder_proof is None:
            made = rt.grants.offer(task, _scope(scope), ttl_seconds=ttl, max_uses=max_uses,
                                   requested=asked)
        else:
            holder = (HolderProof(str(_text_or_file(holder_proof)),
                                  _text_or_file(identity_proof))
                      if holder_proof is not None else None)
            made = rt.grants.issue(task, _scope(scope), ttl_seconds=ttl, max_uses=max_uses,
                                   holder=holder, requested=asked)
    _print_made(made, as_json)


@grant_app.command("redeem")
def redeem(
    offer: Annotated[str, typer.Argument(help="The offer id (offer_…).")],
    identity_proof: Annotated[str, typer.Option(
        "--identity-proof", help="The agent's own identity proof (JWT-SVID or OIDC token), "
        "or @FILE.")],
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="The agent's private key (PEM) to bind the grant to; proctor "
        "signs the holder proof with it.")] = None,
    holder_proof: HolderProofOpt = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Redeem an offer as the agent it names: the grant is bound to the key it proves."""
    from proctor.grants import HolderProof, make_proof
    from proctor.grants.issuance import ISSUE_METHOD
    from proctor.runtime import issuer_for

    identity = str(_text_or_file(identity_proof))
    with acting_runtime(by, as_json) as (rt, acting):
        if (key_file is None) == (holder_proof is None):
            raise RequestError("give one of --key-file and --holder-proof")
        if key_file is not None:
            from proctor.gateway.launch import load_agent_key  # the MCP SDK: only here

            key = load_agent_key(key_file)
            proof = make_proof(key, identity, method=ISSUE_METHOD, target=issuer_for(rt.settings),
                               now=rt.clock.now())
        else:
            proof = str(_text_or_file(holder_proof))
        grant = rt.grants.redeem(offer, HolderProof(proof, identity),
                                 requested=_asked(acting, "grant.redeem"))
    _print_issued(grant, as_json)


def _asked(acting: Acting, action: str) -> AuditEvent:
    """The operator's event of a grant or an offer asked for, written with it (the
    issuer names what was made: ``Grant::"acc_…"`` issued, ``Offer::"offer_…"``
    offered)."""
    return acting.event(action, "", "")


@grant_app.command("exchange")
def exchange(
    token: TokenArg,
    proof: Annotated[str, typer.Option("--proof", help="The holder's proof for the exchange.")],
    to: Annotated[str, typer.Option("--to", help="The agent receiving the child grant.")],
    scope: ScopeOpt, ttl: TtlOpt = None, max_uses: UsesOpt = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Delegate: trade a grant for a narrower one for another agent.

    An agent without a registered key gets an offer, which only it can redeem.
    """
    token = _token(token)
    with acting_runtime(by, as_json) as (rt, acting):
        made = rt.grants.exchange(token, proof, to_agent=to, scope=_scope(scope),
                                  ttl_seconds=ttl, max_uses=max_uses,
                                  requested=_asked(acting, "grant.exchange"))
    _print_made(made, as_json)


TokenArg = Annotated[str, typer.Argument(
    help="The grant, or `-` to read it from standard input (keeps it out of `ps` and history).")]


def _token(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


def _call_method(method: str) -> str:
    """``--method`` if it is a call's, as ``POST /v1/grants/check`` and ``/v1/decide``
    take it (:data:`~proctor.enforcement.CALL_METHODS`): a proof made for a listing, an
    answer or a grant exchange is never a call's, and checking one would spend it."""
    from proctor.enforcement import CALL_METHODS

    if method not in CALL_METHODS:
        raise typer.BadParameter(f"`{method[:64]}` is not a call's method: one of "
                                 f"{', '.join(sorted(CALL_METHODS))}")
    return method


@grant_app.command("check")
def check(
    token: TokenArg,
    proof: Annotated[str | None, typer.Option("--proof", help="A proof for one use.")] = None,
    method: Annotated[str, typer.Option(
        "--method", callback=_call_method,
        help="The method the proof names (its htm): a call's, as the API takes it.")] \
        = "tools/call",
    target: Annotated[str | None, typer.Option("--target")] = None,
    tool: Annotated[str | None, typer.Option("--tool", help="server/tool")] = None,
    args: Annotated[str, typer.Option("--args", help="The call's arguments, JSON.")] = "{}",
    as_json: JsonOpt = False,
) -> None:
    """Check a grant: without --proof, whether it is valid now; with it, one use."""
    token = _token(token)
    with _runtime(as_json) as rt:
        if proof is None:
            claims = rt.grants.inspect(token).claims
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
    with acting_runtime(by, as_json) as (rt, acting):
        revoked = rt.grants.revoke(grant, reason, by=acting.operator.actor)
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
