"""``proctor serve`` (the control-plane API) and ``proctor token`` (API tokens)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from proctor.cli.operator import Acting, ByOpt, acting_runtime, operator_for
from proctor.cli.output import console, err_console, fail, print_json
from proctor.config import load_settings
from proctor.errors import ProctorError

if TYPE_CHECKING:
    import uvicorn

    from proctor.server import ApiTokens, MintedToken

# proctor.server (FastAPI, uvicorn) is imported where it is used, so that every
# other command starts without it.

__all__ = ["announce_admin_token", "ensure_admin_token", "serve", "token_app"]

token_app = typer.Typer(no_args_is_help=True,
                        help="Create, list and revoke API tokens for humans.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def ensure_admin_token(tokens: ApiTokens, acting: Acting) -> MintedToken | None:
    """The local admin token, if no admin token exists yet, made with the operator's
    ``token.create`` event in one transaction (unaudited: not made); None if one exists."""
    return tokens.ensure_admin(audit=acting.audit,
                               event=acting.event("token.create", "", "created"))


def announce_admin_token(minted: MintedToken) -> None:
    """Show a new admin token, once: proctor keeps only its hash."""
    console.print(f"admin token for {minted.record.human_id} (shown once; proctor keeps only "
                  "its hash):")
    console.print(minted.token, markup=False, soft_wrap=True)


WORKER_START_SECONDS = 60


def default_workers(is_embedded: bool) -> int:
    """Two workers where a second one helps: on PostgreSQL (SQLite is one process's
    store) with a second CPU. One process is bound by its CPU per decision (the GIL),
    so a second worker is what lets a second core answer."""
    return 1 if is_embedded or (os.cpu_count() or 1) < 2 else 2


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8600,
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Worker processes (PostgreSQL only; default 2 there when the "
        "machine has two CPUs or more, and 1 on the embedded default).")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    audit_stream: Annotated[str | None, typer.Option(
        "--audit-stream", help="Also stream the audit log (OCSF) to this collector, as "
        "`proctor audit stream` does under the name `siem`.")] = None,
    audit_stream_format: Annotated[str, typer.Option(
        "--audit-stream-format", help="For HTTP: `json` or `splunk_hec`.")] = "json",
    audit_stream_token_env: Annotated[str | None, typer.Option(
        "--audit-stream-token-env", help="The variable holding the collector's token.")
    ] = None,
) -> None:
    """Serve the control-plane HTTP API.

    On the embedded default the home is set up on first start (SQLite, keys,
    example policies) and an admin token is printed once if none exists yet.
    Listening on anything but loopback needs `public_url` in server.toml.
    """
    import uvicorn

    from proctor.listening import forwarded_options
    from proctor.runtime import init_home, open_runtime
    from proctor.server import ApiTokens, load_server_config
    from proctor.server.asgi import NoDelayHttpToolsProtocol
    from proctor.server.config import check_listen

    if (workers is not None and not 1 <= workers <= 64) or not 0 <= port <= 65535:
        fail("`--workers` is 1 to 64 and `--port` 0 to 65535", code="request_invalid")
    try:
        settings = load_settings()
        config = load_server_config(settings.home)
        check_listen(config, host)
        if workers is None:
            workers = default_workers(settings.is_embedded)
        if settings.is_embedded:
            if workers > 1:
                fail("the embedded default (SQLite) runs one process; set "
                     "PROCTOR_DATABASE_URL=postgresql://… for more workers",
                     code="config_invalid")
            init_home(settings)
        elif not settings.policy_dir.is_dir():
            fail(f"no policy directory at `{settings.policy_dir}`: run `proctor init` first",
                 code="config_invalid")
        operator = operator_for(None, settings)
        runtime = open_runtime(settings)
    except ProctorError as exc:
        fail(exc.message, code=exc.code)
    minted = None
    if settings.is_embedded:
        acting = Acting(operator, runtime.audit, runtime.clock)
        try:
            minted = ensure_admin_token(ApiTokens(runtime.store, runtime.clock), acting)
            acting.settle()
        except ProctorError as exc:
            runtime.close()
            fail(exc.message, code=exc.code)
    if minted is not None:
        announce_admin_token(minted)
    backend = runtime.store.backend
    err_console.print(f"proctor serve: http://{host}:{port} on {backend}, "
                      f"{workers} worker{'s' if workers > 1 else ''}", markup=False)
    from proctor.cli.audit import streaming_in_background

    streaming = streaming_in_background(audit_stream, shape=audit_stream_format,
                                        token_env=audit_stream_token_env, settings=settings)
    if workers == 1:
        from proctor.server import create_app  # the workers build their own

        # ws="none": no WebSocket protocol behind either server (a request asking to
        # switch protocols is refused, proctor.server.framing)
        with streaming:
            uvicorn.run(create_app(runtime, config, owns_runtime=True), host=host, port=port,
                        log_level=log_level, access_log=False, http=NoDelayHttpToolsProtocol,
                        ws="none", **forwarded_options(config.trusted_proxies))
        return
    runtime.close()
    _serve_workers(uvicorn.Config(
        "proctor.server.asgi:app_from_env", factory=True, host=host, port=port,
        workers=workers, log_level=log_level, access_log=False, http=NoDelayHttpToolsProtocol,
        ws="none", **forwarded_options(config.trusted_proxies),
        # A worker answers uvicorn's health check only once it has imported everything;
        # on a busy machine that takes longer than uvicorn's 5 s, and a worker killed for
        # it is started again, just as slowly, for ever.
        timeout_worker_healthcheck=WORKER_START_SECONDS), streaming)


def _serve_workers(config: uvicorn.Config, streaming: AbstractContextManager[object]) -> None:
    """uvicorn's supervisor and its workers, each listening on a socket of its own where
    the kernel shares a port's connections out (:mod:`proctor.server.workers`)."""
    from uvicorn.supervisors import Multiprocess

    from proctor.server.workers import reserve

    try:
        port = reserve(config.host, config.port)
    except OSError as exc:
        fail(f"cannot listen on `{config.host}:{config.port}`: {exc.strerror or exc}",
             code="config_invalid")
    sockets = [port if port is not None else config.bind_socket()]
    # as uvicorn.run: on Ctrl-C the workers were told, and have ended
    with streaming, _multiprocess_metrics(), contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=sockets).run()


@contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """Workers write their metrics to one directory, so /metrics adds them all up."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="proctor-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


@contextmanager
def _tokens(by: str | None, as_json: bool) -> Iterator[tuple[ApiTokens, Acting]]:
    from proctor.server import ApiTokens

    with acting_runtime(by, as_json) as (runtime, acting):
        yield ApiTokens(runtime.store, runtime.clock), acting


@token_app.command("create")
def create_token(
    human: Annotated[str, typer.Option("--human", help="The human the token is for.")],
    role: Annotated[list[str], typer.Option(
        "--role", help="admin, approver or auditor (repeatable).")],
    ttl: Annotated[int | None, typer.Option("--ttl", help="Seconds until it expires.")] = None,
    by: ByOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create an API token for a human; it is shown once. Where the human issuers of
    server.toml declare id_domains, the human is an address in one of them."""
    from proctor.server import ApiTokens
    from proctor.server.config import load_server_config

    with acting_runtime(by, as_json) as (runtime, acting):
        tokens = ApiTokens(runtime.store, runtime.clock)
        issuers = load_server_config(runtime.settings.home).oidc_issuers
        # with its event, in one transaction; unaudited: no token
        minted = tokens.create(human, role, ttl_seconds=ttl, issuers=issuers,
                               audit=acting.audit,
                               event=acting.event("token.create", "", "created"))
    if as_json:
        print_json({"token": minted.token, **minted.record.as_json()})
        return
    console.print(f"token {minted.record.id} for {minted.record.human_id} "
                  f"({', '.join(sorted(role))}); shown "
                  "once, proctor keeps only its hash:", markup=False)
    console.print(minted.token, markup=False, soft_wrap=True)


@token_app.command("list")
def list_tokens(as_json: JsonOpt = False) -> None:
    """List API tokens (never the tokens themselves)."""
    from proctor.runtime import open_runtime
    from proctor.server import ApiTokens

    try:
        runtime = open_runtime(load_settings())
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    try:
        found = ApiTokens(runtime.store, runtime.clock).list()
    except ProctorError as exc:
        fail(exc.message, code=exc.code, as_json=as_json)
    finally:
        runtime.close()
    if as_json:
        print_json({"tokens": [t.as_json() for t in found]})
        return
    table = Table()
    for column in ("id", "human", "roles", "created", "expires", "revoked"):
        table.add_column(column)
    for t in found:
        view = t.as_json()
        table.add_row(t.id, t.human_id, ", ".join(view["roles"]), view["created_at"][:19],
                      (view["expires_at"] or "-")[:19], (view["revoked_at"] or "-")[:19])
    console.print(table)


@token_app.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="The token's id (tok_…).")],
                 by: ByOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke an API token; it stops working at once, on every node (and stays revoked
    even if the revocation cannot be audited)."""
    with _tokens(by, as_json) as (tokens, acting):
        # with its event, in one transaction; unaudited: revoked all the same, and told
        revoked = tokens.revoke(token_id, audit=acting.audit,
                                event=acting.event("token.revoke", "", "revoked"))
    if as_json:
        print_json(revoked.as_json())
    else:
        console.print(f"token {revoked.id} of {revoked.human_id} is revoked", markup=False)

