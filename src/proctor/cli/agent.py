"""``proctor agent``: register agents, look at them, review drift, suspend and retire."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from proctor.cli.operator import Acting, ByOpt, acting_store
from proctor.cli.output import confirm_review, console, fail, print_json
from proctor.clock import SystemClock
from proctor.config import load_settings
from proctor.documents import read_json
from proctor.errors import IdentityError, ProctorError, RequestError

if TYPE_CHECKING:
    from proctor.identity import (
        Agent,
        AgentRegistry,
        ProofSpec,
    )

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Register agents and manage their trust state.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AgentArg = Annotated[str, typer.Argument(
    help="The agent's SPIFFE ID, or its name in the configured trust domain.")]
_MAX_JWK_BYTES = 16 * 1024


@contextmanager
def _registry(as_json: bool) -> Iterator[tuple[AgentRegistry, Callable[[str], str]]]:
    """The registry of the configured home, and a function that resolves agent names."""
    from proctor.identity import AgentRegistry, agent_id_for, load_trust_config
    from proctor.oversight.risk import load_risk_config
    from proctor.store import open_store

    try:
        settings = load_settings()
        trust = load_trust_config(settings.home, settings.trust_domain)
        prior = load_risk_config(settings.home).prior
        store = open_store(settings.database_url, pool_size=settings.database_pool_size,
                           pool_timeout_seconds=settings.database_pool_timeout_seconds,
                           lock_timeout_seconds=settings.database_lock_timeout_seconds)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        yield (AgentRegistry(store, SystemClock(), trust, starting_risk=prior),
               lambda name: agent_id_for(name, settings.trust_domain).id)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        store.close()


@contextmanager
def _acting(by: str | None, as_json: bool
            ) -> Iterator[tuple[AgentRegistry, Callable[[str], str], Acting]]:
    """As :func:`_registry`, for a change audited as the operator's."""
    from proctor.identity import AgentRegistry, agent_id_for, load_trust_config
    from proctor.oversight.risk import load_risk_config

    with acting_store(by, as_json) as (settings, store, _keyring, acting):
        trust = load_trust_config(settings.home, settings.trust_domain)
        prior = load_risk_config(settings.home).prior
        yield (AgentRegistry(store, acting.clock, trust, starting_risk=prior),
               lambda name: agent_id_for(name, settings.trust_domain).id, acting)


def _read_jwk(path: Path) -> dict[str, Any]:
    data = read_json(path, what="key file",
                     error=partial(IdentityError, "agent_key_invalid"), max_bytes=_MAX_JWK_BYTES)
    if not isinstance(data, dict):
        raise IdentityError("agent_key_invalid", f"key file `{path}` is not a JSON JWK")
    return data


def _proof(jwk: Path | None, jwt_svid: bool, oidc_subject: str | None,
           oidc_issuer: str | None) -> ProofSpec:
    from proctor.identity import JwtSvidProof, OidcProof, OwnKeyProof

    chosen = [jwk is not None, jwt_svid, oidc_subject is not None or oidc_issuer is not None]
    if sum(chosen) != 1:
        raise RequestError("choose exactly one proof: --jwk FILE, --jwt-svid, "
                           "or --oidc-subject SUBJECT (with --oidc-issuer if several)")
    if jwk is not None:
        return OwnKeyProof(_read_jwk(jwk))
    if jwt_svid:
        return JwtSvidProof()
    return OidcProof(subject=oidc_subject, issuer=oidc_issuer)


def _report(agent: Agent, as_json: bool, summary: str) -> None:
    if as_json:
        print_json(agent.as_json())
    else:
        console.print(summary, markup=False, soft_wrap=True)


@app.command()
def register(
    agent: AgentArg,
    owner: Annotated[str, typer.Option("--owner", help="The accountable human.")],
    manifest: Annotated[Path, typer.Option("--manifest", help="Manifest file (JSON or YAML).")],
    group: Annotated[list[str] | None, typer.Option("--group", help="A group (repeatable).")]
    = None,
    jwk: Annotated[Path | None, typer.Option("--jwk", help="The agent's public key (JWK).")]
    = None,
    jwt_svid: Annotated[bool, typer.Option("--jwt-svid", help="It presents JWT-SVIDs.")] = False,
    oidc_subject: Annotated[str | None, typer.Option(
        "--oidc-subject", help="The `sub` of its OIDC workload tokens.")] = None,
    oidc_issuer: Annotated[str | None, typer.Option(
        "--oidc-issuer", help="The OIDC issuer (when several are configured).")] = None,
    by: ByOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an agent as trusted, with its manifest as the reviewed one (reviewed by
    the human running the command)."""
    from proctor.identity import load_manifest
    from proctor.oversight.trusting import register_agent

    with _acting(by, as_json) as (registry, resolve, acting):
        proof = _proof(jwk, jwt_svid, oidc_subject, oidc_issuer)
        # with its event, in one transaction; unaudited: not registered
        created = register_agent(
            registry, acting.audit, acting.clock, resolve(agent), owner=owner, proof=proof,
            manifest=load_manifest(manifest), groups=group or (),
            registered_by=acting.operator.id, source="cli")
    _report(created, as_json, f"registered {created.id} ({created.proof_method.value}, "
                              f"{created.trust_state.value}); manifest {created.manifest_digest}")


@app.command("list")
def list_agents(
    state: Annotated[str | None, typer.Option(
        "--state", help="Only this state: trusted, drifted, suspended or retired.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered agents."""
    from proctor.identity import TrustState

    try:
        wanted = TrustState(state) if state is not None else None
    except ValueError:
        fail(f"state `{state}` is not one of trusted, drifted, suspended, retired",
             code="request_invalid", as_json=as_json)
    with _registry(as_json) as (registry, _):
        agents = registry.list_agents(state=wanted)
    if as_json:
        print_json({"agents": [a.as_json() for a in agents]})
        return
    if not agents:
        console.print("no agents registered")
        return
    table = Table()
    for column in ("agent", "owner", "proof", "state", "risk"):
        table.add_column(column)
    for a in agents:
        table.add_row(a.id, a.owner, a.proof_method.value, a.trust_state.value, str(a.risk_score))
    console.print(table)


@app.command()
def show(agent: AgentArg, as_json: JsonOpt = False) -> None:
    """Show one agent, and how its presented manifest differs from the reviewed one."""
    with _registry(as_json) as (registry, resolve):
        found = registry.get(resolve(agent))
    if as_json:
        print_json(found.as_json())
        return
    view = found.as_json()
    for field in ("id", "owner", "groups", "proof_method", "key_thumbprint", "oidc_issuer",
                  "oidc_subject", "trust_state", "risk_score", "manifest_digest",
                  "presented_digest", "reviewed_by", "reviewed_at", "state_changed_by",
                  "state_reason"):
        value = view[field]
        if value not in (None, [], ""):
            console.print(f"{field}: {', '.join(value) if isinstance(value, list) else value}",
                          markup=False, soft_wrap=True)
    _print_drift(found)


def _print_drift(agent: Agent) -> None:
    for name, (reviewed, presented) in (
            agent.manifest.differences(agent.presented_manifest).items()
            if agent.presented_manifest else ()):
        console.print(f"drift in {name}: reviewed {reviewed!r} -> presented {presented!r}",
                      markup=False, soft_wrap=True)


@app.command()
def review(
    agent: AgentArg, by: ByOpt = None,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="Adopt this manifest instead of the presented one.")] = None,
    digest: Annotated[str | None, typer.Option(
        "--digest", help="Only if the manifest to adopt still has this digest (agent show's "
        "presented_digest); without it, the drift is shown and the review asks for a yes.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Adopt the presented (or given) manifest as reviewed; trust the agent again. The
    review names the digest of the manifest it adopts: --digest, or the one shown here
    once confirmed (refused manifest_changed if the agent presented another one in
    between)."""
    from proctor.identity import load_manifest
    from proctor.oversight.trusting import review_agent

    with _acting(by, as_json) as (registry, resolve, acting):
        adopted = load_manifest(manifest) if manifest is not None else None
        agent_id = resolve(agent)
        if adopted is None and digest is None:
            found = registry.get(agent_id)
            if not as_json:
                _print_drift(found)
            confirm_review(f"adopt manifest {found.review_digest} for {found.id}?",
                           as_json=as_json)
            digest = found.review_digest
        # with its event, in one transaction; unaudited: nothing changed
        updated = review_agent(registry, acting.audit, acting.clock, agent_id,
                               reviewer=acting.operator.id, manifest=adopted,
                               expected_digest=digest, source="cli")
    _report(updated, as_json, f"{updated.id} is {updated.trust_state.value}; reviewed manifest "
                              f"{updated.manifest_digest} by {updated.reviewed_by}")


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why.")]


@app.command()
def suspend(agent: AgentArg, by: ByOpt = None, reason: ReasonOpt = "",
            as_json: JsonOpt = False) -> None:
    """Deny the agent everything until a human reviews it."""
    _set_state(agent, "suspend", by, reason, as_json)


@app.command()
def retire(agent: AgentArg, by: ByOpt = None, reason: ReasonOpt = "",
           as_json: JsonOpt = False) -> None:
    """Deny the agent everything, for good."""
    _set_state(agent, "retire", by, reason, as_json)


def _set_state(agent: str, verb: str, by: str | None, reason: str, as_json: bool) -> None:
    """Suspend or retire, with its event in the same transaction; the agent's grants are
    revoked with it. It stands even if it cannot be audited (the command fails). The
    home's policies are not read: an operator stops an agent whatever state they are in."""
    from proctor.grants.leases import LeaseTree
    from proctor.identity import AgentRegistry, TrustState, agent_id_for, load_trust_config
    from proctor.oversight.risk import load_risk_config
    from proctor.oversight.standing import change_standing

    with acting_store(by, as_json) as (settings, store, _keyring, acting):
        registry = AgentRegistry(
            store, acting.clock, load_trust_config(settings.home, settings.trust_domain),
            starting_risk=load_risk_config(settings.home).prior)
        leases = LeaseTree(store, acting.clock)
        try:
            # the grants end in change_standing's own transaction, with the event or (the
            # log down) alone: the registry's own suspend/retire, and its hooks, are not used
            updated = change_standing(
                registry, acting.audit, acting.clock, leases,
                agent_id_for(agent, settings.trust_domain).id,
                TrustState.SUSPENDED if verb == "suspend" else TrustState.RETIRED,
                by=acting.operator.id, reason=reason, source="cli",
                detail={"os_user": acting.operator.os_user})
        finally:
            leases.settle(timeout=30)  # the grants it handed on: marked before the store closes
    _report(updated, as_json, f"{updated.id} is {updated.trust_state.value}")


@app.command()
def risk(agent: AgentArg, as_json: JsonOpt = False) -> None:
    """Show the agent's risk score now: the prior's part, every factor (level, weight,
    points, why) and the trend. Folds what the audit log holds that is new first."""
    from proctor.identity import agent_id_for
    from proctor.runtime import open_runtime

    try:
        settings = load_settings()
        runtime = open_runtime(settings)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        found = runtime.registry.get(agent_id_for(agent, settings.trust_domain).id)
        runtime.risk.catch_up()
        view = runtime.risk.view(found.id)
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()
    if as_json:
        print_json(view.as_json())
        return
    console.print(f"{view.agent_id}: risk {view.score} (prior {view.prior:.1f} after "
                  f"{view.calls} calls)", markup=False, soft_wrap=True)
    table = Table()
    for column in ("factor", "level", "weight", "points", "why"):
        table.add_column(column)
    for factor in view.factors:
        table.add_row(factor.name, f"{factor.level:.2f}", str(factor.weight),
                      f"{factor.points:.1f}", factor.why)
    console.print(table)
    if view.trend:
        console.print("trend: " + " → ".join(f"{score} ({at[11:19]})"
                                            for at, score in view.trend[-10:]),
                      markup=False, soft_wrap=True)
