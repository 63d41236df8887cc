"""An offer made by an exchange is decided for the delegator again when it is redeemed.

An exchange to an agent without a registered key (one that proves itself by JWT-SVID)
makes an offer: the grant is decided then, for the receiving agent and for the
delegator, and made when the receiver redeems it with a key of its own, minutes later.
Whatever happened to the delegator meanwhile counts: the redemption is decided for the
delegator on its state now, as the exchange was, and its write confirms that state
(``agent_changed``: decided once more), so that a delegator that drifted, was
suspended, lost its grant, rose in risk or that policy no longer issues the tools to
never hands them on through an offer made before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from proctor.clock import FrozenClock
from proctor.errors import GrantError
from proctor.grants import GrantOffer, GrantScope, HolderProof, IssuedGrant, make_proof
from proctor.grants.authority import EXCHANGE_METHOD, ISSUE_METHOD
from proctor.identity import JwtSvidProof
from proctor.policy.source import read_policy_dir
from proctor.runtime import Runtime, issuer_for, open_runtime
from proctor.store.tables import grant_offers
from tests.identity.factories import SvidAuthority, manifest, svid_home

from .conftest import CODER, OWNER, RISKY_GRANTS, Agents, rise_after_first_read
from .test_stale_views import news_held

FINANCE = "spiffe://acme.example/agent/finance"  # no registered key: proves itself by SVID
LOOKUP = "crm/lookup_customer"  # confidential: no grant of it for a drifted agent
NO_CODER_LOOKUPS = ('@id("no-lookups-for-coders")\n@reason("coders hand on no lookups")\n'
                    'forbid (principal in Group::"coding-agents", '
                    'action == Action::"grant:issue", resource == Tool::"crm/lookup_customer");\n')


SVIDS = SvidAuthority()  # the trust domain's JWT-SVID signer (its key made at run time)


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, frozen: FrozenClock) -> Iterator[Runtime]:
    """The whole runtime, its home trusting the SPIFFE bundle of ``SVIDS``, with FINANCE
    registered to prove itself by JWT-SVID (``agents`` adds CODER and SUPPORT, keyed)."""
    runtime = open_runtime(svid_home(tmp_path / "home", database_url, SVIDS), clock=frozen)
    runtime.registry.register(FINANCE, owner=OWNER, groups=["support-agents"],
                              proof=JwtSvidProof(), manifest=manifest())
    yield runtime
    runtime.close()


class Offered:
    """CODER's grant of ``LOOKUP``, exchanged for FINANCE: an offer FINANCE redeems."""

    def __init__(self, runtime: Runtime, agents: Agents) -> None:
        self.runtime = runtime
        self.held = agents.grant(CODER, [{"tool": LOOKUP}], purpose="look up a customer")
        proof = make_proof(agents.keys[CODER], self.held.token, method=EXCHANGE_METHOD,
                           target=issuer_for(runtime.settings), now=runtime.clock.now())
        offer = runtime.grants.exchange(
            self.held.token, proof, to_agent=FINANCE,
            scope=GrantScope.from_json({"tools": [{"tool": LOOKUP}]}), ttl_seconds=300)
        assert isinstance(offer, GrantOffer) and offer.actor_chain == (CODER,)
        self.offer = offer
        self.key = ec.generate_private_key(ec.SECP256R1())

    def redeem(self) -> IssuedGrant:
        """What FINANCE sends: its SVID and a proof of its own key tied to it."""
        now = self.runtime.clock.now()
        svid = SVIDS.svid(FINANCE, now)
        return self.runtime.grants.redeem(self.offer.id, HolderProof(make_proof(
            self.key, svid, method=ISSUE_METHOD, target=issuer_for(self.runtime.settings),
            now=now), svid))

    def untouched(self) -> bool:
        """The offer still open and no grant made from it."""
        with self.runtime.store.reading() as conn:
            row = conn.execute(select(grant_offers.c.redeemed_at, grant_offers.c.grant_id)
                               .where(grant_offers.c.id == self.offer.id)).one()
        return (row.redeemed_at, row.grant_id) == (None, None) and all(
            node.agent_id != FINANCE for node in self.runtime.grants.tree(self.offer.task_id))


def _with_policy(runtime: Runtime, name: str, policy: str) -> None:
    sources = {**read_policy_dir(runtime.settings.policy_dir), name: policy}
    runtime.policies.activate(runtime.policies.add_candidate(sources, origin=name))


def _events_since(runtime: Runtime, seq: int) -> list[dict[str, Any]]:
    found = []
    for (body,) in runtime.store.fetch(
            "SELECT body FROM audit_events WHERE seq > {p} ORDER BY seq", [seq]):
        found.append(json.loads(body) if isinstance(body, str) else body)
    return found


def _last_seq(runtime: Runtime) -> int:
    return int(runtime.store.fetch("SELECT COALESCE(MAX(seq), 0) FROM audit_events", [])[0][0])


def _risen(runtime: Runtime) -> None:
    _with_policy(runtime, "risky.cedar", RISKY_GRANTS)
    runtime.registry.set_risk_score(CODER, 70)


# what happens to the delegator between the offer and its redemption, and the refusal's code
CHANGES: dict[str, tuple[Callable[[Runtime, Offered], object], str]] = {
    "suspended": (lambda rt, o: rt.registry.suspend(CODER, by="erin@acme.example",
                                                   reason="odd behaviour"),
                  "agent_not_active"),
    "drifted": (lambda rt, o: rt.registry.present_manifest(
        CODER, manifest(model_id="some-other-model")), "delegator_not_trusted"),
    "reviewed on another manifest": (lambda rt, o: rt.registry.review(
        CODER, reviewer="erin@acme.example", manifest=manifest(model_id="its-next-model")),
        "grant_manifest_changed"),
    "its grant revoked": (lambda rt, o: rt.grants.revoke(o.held.accessor, "done"),
                          "grant_revoked"),
    "forbidden by policy": (lambda rt, o: _with_policy(rt, "coders.cedar", NO_CODER_LOOKUPS),
                            "issuance_denied"),
    "risen in risk": (lambda rt, o: _risen(rt), "issuance_denied"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_an_offer_is_not_redeemed_for_a_delegator_that_could_not_hand_it_on_now(
        runtime: Runtime, agents: Agents, change: str) -> None:
    offered = Offered(runtime, agents)
    make_change, code = CHANGES[change]
    make_change(runtime, offered)
    before = _last_seq(runtime)
    with pytest.raises(GrantError) as refused:
        offered.redeem()
    assert refused.value.code == code, refused.value.message
    assert offered.untouched()  # nothing stored, the offer not taken
    # audited: the delegator's decision that refused it, or the redemption's refusal
    denied = [e for e in _events_since(runtime, before)
              if e["action"] == "grant:issue" and e["outcome"] == "denied"]
    if code == "issuance_denied":
        assert [e["actor"]["id"] for e in denied] == [CODER]
        assert denied[0]["target"] == f'Tool::"{LOOKUP}"'
    else:
        assert [(e["actor"]["id"], e["detail"]["code"]) for e in denied] == [(FINANCE, code)]


def test_an_offer_is_redeemed_for_a_delegator_that_may_still_hand_it_on(
        runtime: Runtime, agents: Agents) -> None:
    offered = Offered(runtime, agents)
    before = _last_seq(runtime)
    grant = offered.redeem()
    assert (grant.claims.agent_id, grant.claims.actor_chain) == (FINANCE, (CODER,))
    # decided for the receiver and for the delegator, both allowed, with the grant
    issued = [(e["actor"]["id"], e["outcome"]) for e in _events_since(runtime, before)
              if e["action"] == "grant:issue"]
    assert issued == [(FINANCE, "allowed"), (CODER, "allowed")]


@pytest.mark.parametrize("allowed", [False, True])
def test_a_redemption_confirms_the_delegator_as_it_was_decided_for_it(
        runtime: Runtime, other: Runtime, agents: Agents,
        allowed: bool) -> None:
    """The delegator is read from the store when the redemption is decided for it; a risk
    committed elsewhere after that read and before the grant's write refuses the write
    (``agent_changed``: nothing stored, none of its events written), and the redemption
    is decided once more on the score as committed: refused over 50, else redeemed, the
    delegator's one event naming the refusal."""
    _with_policy(runtime, "risky.cedar", RISKY_GRANTS)
    offered = Offered(runtime, agents)
    score = runtime.registry.get(CODER).risk_score
    assert score < 50
    risen = score + 1 if allowed else 70
    # committed after the delegator was read for the redemption, before the grant's write;
    # its news held back until the redemption is answered (else this node's feed may put
    # the risen score into its engine before the first decision: denied on it at once)
    read = rise_after_first_read(runtime, other, CODER, risen)
    before = _last_seq(runtime)
    with news_held(runtime):
        if allowed:
            assert offered.redeem().claims.agent_id == FINANCE
        else:
            with pytest.raises(GrantError) as refused:
                offered.redeem()
            assert refused.value.code == "issuance_denied"
    if not allowed:
        assert offered.untouched()
    assert read == [score, risen]  # decided once more, on the score as committed
    [event] = [e for e in _events_since(runtime, before)
               if e["action"] == "grant:issue" and e["actor"]["id"] == CODER]
    assert event["outcome"] == ("allowed" if allowed else "denied")
    assert event["detail"]["decided_again"]["code"] == "agent_changed"
    with runtime.store.reading() as conn:
        taken = conn.execute(select(func.count()).select_from(grant_offers)
                             .where(grant_offers.c.grant_id.is_not(None))).scalar()
    assert taken == (1 if allowed else 0)


def test_a_redeemed_grant_is_held_to_the_manifest_its_delegator_handed_it_on_under(
        runtime: Runtime, agents: Agents) -> None:
    """The grant made from an exchange's offer carries the delegator's manifest in its
    `act` chain (kept with the offer): once a human reviews the delegator onto another
    manifest, a use of it is refused ``grant_manifest_changed``, as the delegator's own."""
    offered = Offered(runtime, agents)
    grant = offered.redeem()
    assert grant.claims.line_manifests == (offered.held.claims.manifest_digest,)
    assert runtime.grants.inspect(grant.token).claims.agent_id == FINANCE
    runtime.registry.review(CODER, reviewer="erin@acme.example",
                            manifest=manifest(model_id="its-next-model"))
    with pytest.raises(GrantError) as refused:
        runtime.grants.inspect(grant.token)
    assert refused.value.code == "grant_manifest_changed"
