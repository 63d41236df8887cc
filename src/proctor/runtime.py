"""The composition root: every shared part built once, for the server, the gateways, the
CLI and the demo.

:func:`open_runtime` opens the store, reads the master key once, and wires: the policy
engine with the home's catalog and the tools discovered at run time, the active
policies, the agent registry and the grants part's view of it, the issuer keyring
(grants and audit checkpoints), the grant authority, the audit log, the approval
queue (and its webhook's configuration), the secret store, the risk engine and the enforcer. Nothing
below this module builds a store, a keyring or a master key of its own; everything
above it (``server``, ``gateway``, ``cli``, ``demo``) takes a :class:`Runtime`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from proctor import telemetry
from proctor.approvals import (
    ApprovalQueue,
    WebhookConfig,
    WebhookDelivery,
    load_webhook_config,
)
from proctor.audit import Actor, ActorType, Attribution, AuditLog
from proctor.clock import Clock, SystemClock
from proctor.config import Settings
from proctor.enforcement import Enforcer
from proctor.errors import SigningKeyError
from proctor.grants import (
    GrantAuthority,
    IssuerKeyring,
    RegisteredAgents,
    RevocationView,
    TaskLimits,
    TaskView,
    TokenCodec,
)
from proctor.identity import (
    AgentRegistry,
    AgentView,
    follow_agents,
    load_trust_config,
    sync_principals,
)
from proctor.keys import LEGACY_KEY_FILE, load_legacy_signer
from proctor.oversight.activating import apply_sources
from proctor.oversight.drifting import attest
from proctor.oversight.risk import RiskEngine, load_risk_config
from proctor.policy import PolicyEngine, PolicyStore, load_bundle
from proctor.policy.known_tools import KnownTools
from proctor.sealing import load_master_key
from proctor.secrets import SecretStore
from proctor.store import Store, open_store
from proctor.store.changes import Change, ChangeFeed

__all__ = [
    "EXAMPLE_POLICIES",
    "Runtime",
    "init_home",
    "issuer_for",
    "open_keyring",
    "open_runtime",
]

log = logging.getLogger(__name__)

EXAMPLE_POLICIES = Path(__file__).resolve().parent / "examples" / "policies"


@dataclass
class Runtime:
    """The parts of one process, each built once (see the module docstring)."""

    settings: Settings
    clock: Clock
    store: Store
    engine: PolicyEngine
    policies: PolicyStore
    registry: AgentRegistry
    agents: RegisteredAgents  # the registry as grants and the API's authentication see it
    tools: KnownTools  # tools discovered at run time, by any process
    grants: GrantAuthority
    audit: AuditLog
    approvals: ApprovalQueue
    enforcer: Enforcer
    keyring: IssuerKeyring  # the issuer keys: grants and audit checkpoints
    secrets: SecretStore  # upstream credentials, sealed under the master key
    feed: ChangeFeed  # what any process changed, for the views below
    agent_view: AgentView  # agents, from memory while the feed is current
    task_view: TaskView  # tasks, likewise
    revocations: RevocationView  # whether leases are revoked, likewise
    risk: RiskEngine  # behaviour baselines and risk scores, from the audit stream
    webhook: WebhookConfig | None = None  # the home's approval webhook, if it has one
    webhook_delivery: WebhookDelivery | None = None  # running in this process

    def deliver_webhooks(self) -> None:
        """Run the approval webhook's delivery in this process, if the home has a webhook:
        the long-running processes call it (``proctor serve`` and its workers, the
        gateways); one of them at a time delivers (docs/approvals.md). Stopped by
        :meth:`close`."""
        if self.webhook is None or self.webhook_delivery is not None:
            return
        delivery = WebhookDelivery(self.webhook, self.store, self.approvals, self.clock)
        delivery.start()
        self.approvals.subscribe(delivery.notify, close=delivery.close)
        self.webhook_delivery = delivery

    def close(self) -> None:
        # the descendants of this process's revocations marked (out of force already;
        # what a minute does not mark, the sweep does)
        self.grants.leases.settle(timeout=60)
        self.approvals.close()  # stops the webhook's delivery, if it runs here
        self.audit.close()
        self.risk.close()  # after the audit log: its batches start no catch-up any more
        self.feed.close()
        self.store.close()


def issuer_for(settings: Settings) -> str:
    """The ``iss`` of this deployment's grants: proctor's SPIFFE ID in its trust domain."""
    return f"spiffe://{settings.trust_domain}/proctor"


def init_home(settings: Settings, *, policies_from: Path = EXAMPLE_POLICIES) -> bool:
    """Create the home and its example policies; False if they already existed."""
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.policy_dir.exists():
        return False
    shutil.copytree(policies_from, settings.policy_dir)
    return True


def open_keyring(settings: Settings, store: Store, clock: Clock,
                 master_key: bytes | None = None) -> IssuerKeyring:
    """The issuer keyring: it signs grants and audit checkpoints, on every node.

    A home from an earlier version holds its own checkpoint key in a plaintext
    file (``keys/issuer.pem``). It is never imported here: a key file dropped into a
    home would otherwise be trusted for checkpoints from the next start on. If such a
    file's key is not in the keyring, a warning names the command that imports it,
    once, as an audited operator action (``proctor audit import-key``). For commands
    that open only the store (``proctor audit``), ``master_key`` is read from the home
    here.
    """
    if master_key is None:
        master_key = load_master_key(settings.home)
    keyring = IssuerKeyring(store, clock, master_key)
    try:
        legacy = load_legacy_signer(settings.home)
    except SigningKeyError as exc:
        log.warning("%s is not imported: %s", LEGACY_KEY_FILE, exc.message)
        legacy = None
    if legacy is not None and legacy.kid not in keyring.checkpoint_verifiers():
        log.warning("the checkpoint key in %s (key id %s) is not in the issuer keyring: "
                    "checkpoints it signed do not verify until `proctor audit import-key` "
                    "imports it", LEGACY_KEY_FILE, legacy.kid)
    return keyring


def open_runtime(settings: Settings, *, clock: Clock | None = None,
                 attribution: Attribution | None = None) -> Runtime:
    """Open the store and an engine for the home's catalog, with the active policies.

    When the store has no active revision yet, the home's policy directory is
    validated and activated. ``attribution`` is given to the audit log (the CLI
    names its operator with it).
    """
    clock = clock or SystemClock()
    if not telemetry.is_enabled():
        telemetry.configure()  # from OTEL_*: nothing happens when they are not set
    store = open_store(settings.database_url, pool_size=settings.database_pool_size,
                       pool_timeout_seconds=settings.database_pool_timeout_seconds,
                       lock_timeout_seconds=settings.database_lock_timeout_seconds)
    try:
        return _wire(settings, clock, store, attribution)
    except BaseException:
        store.close()
        raise


def _learn(tools: KnownTools, engine: PolicyEngine, found: Sequence[Change] | None) -> None:
    """A tool another process discovered is known here from its next decision on
    (``found`` None: changes may have been missed, look at every stored tool)."""
    if found is None or any(c.kind == "tool" and engine.catalog.by_action(f"tool:{c.key}")
                            is None for c in found):
        tools.teach(engine)


def _wire(settings: Settings, clock: Clock, store: Store,
          attribution: Attribution | None) -> Runtime:
    bundle = load_bundle(settings.policy_dir)
    engine = PolicyEngine(bundle.catalog, bundle.principals)
    risk_config = load_risk_config(settings.home)
    registry = AgentRegistry(store, clock,
                             load_trust_config(settings.home, settings.trust_domain, clock=clock),
                             starting_risk=risk_config.prior)
    feed = ChangeFeed(store)  # listening before the first read: no change falls between
    agent_view = AgentView(registry, feed)
    sync_principals(engine, registry, bundle.principals)
    follow_agents(engine, agent_view, registry, bundle.principals)
    tools = KnownTools(store, clock)
    tools.teach(engine)  # what gateways discovered before this process started
    feed.subscribe(lambda found: _learn(tools, engine, found),
                   lambda: _learn(tools, engine, None))
    policies = PolicyStore(store, engine, clock)
    master_key = load_master_key(settings.home)  # read once, here
    keyring = open_keyring(settings, store, clock, master_key)
    codec = TokenCodec(keyring, issuer=issuer_for(settings), audience=settings.grant_audience)
    audit = AuditLog(store, signer=keyring, clock=clock, attribution=attribution)
    if policies.load_active() is None:
        try:
            _first_policies(settings, policies, audit, clock, attribution)
        except BaseException:
            audit.close()
            raise
    agents = RegisteredAgents(registry, store, clock, view=agent_view,
                              attest=partial(attest, registry, audit, clock))
    task_view = TaskView(store, feed)
    revocations = RevocationView(store, feed)
    grants = GrantAuthority(store, clock, codec, engine, agents, audit=audit,
                            task_limits=TaskLimits(settings.task_max_seconds,
                                                   settings.task_idle_seconds), tools=tools,
                            tasks=task_view, revocations=revocations,
                            delegator_max_risk=settings.delegator_max_risk)
    approvals = ApprovalQueue(store, clock, audit=audit)
    webhook = load_webhook_config(settings.home)
    risk = RiskEngine(store, registry, clock, risk_config,
                      sensitivity_of=lambda tool: _sensitivity(engine, tool))
    # every batch folded as it is written (docs/risk.md); a new score is this process's
    # own change: its agent view takes the score committed at once (the entry stays warm)
    audit.observe(risk.folder(published=agent_view.forget, rescored=agent_view.rescored))
    enforcer = Enforcer(grants, registry, engine, audit, approvals, clock,
                        base_principals=bundle.principals, tools=tools,
                        agent_view=agent_view, task_view=task_view,
                        sync_policies=policies.load_active)
    grants.decide_on_current(enforcer.ensure_current, sync_policies=policies.load_active,
                             forget_agent=agent_view.forget)
    secrets = SecretStore(store, clock, master_key, audit=audit, revocations=grants.leases)
    return Runtime(settings, clock, store, engine, policies, registry, agents, tools, grants,
                   audit, approvals, enforcer, keyring, secrets, feed, agent_view, task_view,
                   revocations, risk, webhook)


def _first_policies(settings: Settings, policies: PolicyStore, audit: AuditLog, clock: Clock,
                    attribution: Attribution | None) -> None:
    """No active revision yet (``init``, the first ``serve``): the home's policy directory,
    validated, stored and activated with its ``policy.activate`` event, by the operator of
    the command that opened the runtime (else the system), in one transaction; if the
    event cannot be written nothing is stored (:class:`~proctor.errors.AuditUnavailableError`,
    the runtime does not open)."""
    sources, compiled = policies.read_directory(settings.policy_dir)
    by = attribution.actor if attribution is not None else Actor(ActorType.SYSTEM, "proctor")
    apply_sources(policies, audit, clock, sources, compiled, by=by,
                  origin=f"directory {settings.policy_dir.name}",
                  detail={"digest": compiled.digest, "policies": len(compiled),
                          "reason": "no active revision: the home's policies"})


def _sensitivity(engine: PolicyEngine, tool_id: str) -> int:
    spec = engine.catalog.by_action(f"tool:{tool_id}")
    return int(spec.sensitivity) if spec is not None else 0

