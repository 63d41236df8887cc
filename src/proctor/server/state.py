"""What every request handler reaches: the runtime and the server's own parts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proctor.grants import IssuerKeyring
from proctor.identity.humans import HumanVerifier
from proctor.runtime import Runtime
from proctor.server.authentication import RequestAuthenticator
from proctor.server.config import ServerConfig
from proctor.server.control import ControlPlane
from proctor.server.limits import RateLimiter
from proctor.server.metrics import Metrics
from proctor.server.principals import Principal
from proctor.server.shadow import ShadowState
from proctor.server.tokens import ApiTokens

__all__ = ["RevocationListener", "ServerState"]

RevocationListener = Callable[[Sequence[str], str], None]


@dataclass
class ServerState:
    """The parts of one server process, built once by :func:`create_app`."""

    runtime: Runtime
    config: ServerConfig
    control: ControlPlane
    authenticator: RequestAuthenticator
    limiter: RateLimiter
    tokens: ApiTokens
    keyring: IssuerKeyring
    metrics: Metrics
    shadow: ShadowState
    revocation_listeners: list[RevocationListener] = field(default_factory=list)
    decide_allowed: dict[tuple[Principal, str], None] = field(default_factory=dict)
    """Callers and grants the control plane allowed ``POST /v1/decide`` (its policies are
    fixed while the server runs)."""

    @classmethod
    def build(cls, runtime: Runtime, config: ServerConfig) -> ServerState:
        clock, store = runtime.clock, runtime.store
        tokens = ApiTokens(store, clock)
        authenticator = RequestAuthenticator(
            tokens=tokens, humans=HumanVerifier(config.oidc_issuers), registry=runtime.registry,
            directory=runtime.agents, grants=runtime.grants,
            clock=clock, view=runtime.agent_view, audit=runtime.audit,
            attest=runtime.agents.attest)
        return cls(
            runtime=runtime, config=config, control=ControlPlane(runtime.audit, clock),
            authenticator=authenticator,
            limiter=RateLimiter(clock, rate=config.rate_per_second, burst=config.rate_burst),
            tokens=tokens,
            keyring=runtime.keyring,
            metrics=Metrics(),
            shadow=ShadowState(store, runtime.engine, runtime.policies, clock),
        )
