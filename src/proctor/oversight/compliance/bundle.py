"""The evidence bundle, and checking it offline.

A bundle is one JSON document::

    {"type": "proctor.compliance.bundle", "v": 1,
     "report": {...the report's JSON...},
     "checkpoint": {"seq", "hash", "kid", "signed_at", "payload", "signature"},
     "keys": [public JWK, ...],
     "events": [{"seq", "prev_hash", "hash", "event"}, ...]}

``events`` is the chain from the first cited event up to the checkpoint, every link
with its body. :func:`verify_bundle` checks, with nothing but the bundle (and, when
given, the key the reader trusts):

1. the checkpoint's signature, with the key named by its ``kid``;
2. every link: its hash is ``sha256(prev_hash || canonical body)`` and its
   ``prev_hash`` is the hash before it, positions without a hole;
3. the last link is the checkpoint's position and hash;
4. every event the report cites is in the chain, with the id and hash it cites;
5. the report names this checkpoint.

Any edit to a cited event changes its hash, which breaks step 2 or 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proctor.audit import Checkpoint, StoredEvent, canonical_json, chain_hash, iter_events
from proctor.audit.checkpoints import check_checkpoint
from proctor.errors import SigningKeyError
from proctor.jose import thumbprint
from proctor.keys import PublicKeyVerifier, Verifier
from proctor.oversight.compliance.report import ComplianceReport
from proctor.store import Store

__all__ = ["BUNDLE_TYPE", "BundleCheck", "key_id", "make_bundle", "verify_bundle"]

BUNDLE_TYPE = "proctor.compliance.bundle"
MAX_LINKS = 200_000


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """What checking a bundle found; ``problem`` is the first thing that does not hold."""

    cited: int
    links: int
    checkpoint_seq: int | None
    kid: str | None
    problem: str | None = None

    @property
    def is_valid(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        return {"valid": self.is_valid, "cited": self.cited, "links": self.links,
                "checkpoint_seq": self.checkpoint_seq, "kid": self.kid,
                "problem": self.problem}


def make_bundle(store: Store, report: ComplianceReport,
                keys: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The bundle of ``report``: its checkpoint, the public ``keys`` and the chain from
    the first cited event to the checkpoint. Refused without a covering checkpoint."""
    checkpoint = report.checkpoint
    if checkpoint is None:
        raise ValueError("the report names no signed checkpoint, so it cannot be bundled")
    cited = report.cited()
    first = cited[0]["seq"] if cited else checkpoint.seq
    if checkpoint.seq - first + 1 > MAX_LINKS:
        raise ValueError(f"the chain from the first cited event to the checkpoint holds more "
                         f"than {MAX_LINKS} events; report a shorter window")
    links: list[StoredEvent] = []
    for stored in iter_events(store, after_seq=first - 1):
        if stored.seq > checkpoint.seq:
            break
        links.append(stored)
    return {"type": BUNDLE_TYPE, "v": 1, "report": report.as_json(),
            "checkpoint": checkpoint.as_json(), "keys": [dict(k) for k in keys],
            "events": [s.as_json() for s in links]}


def verify_bundle(bundle: Any, *, trusted: Sequence[Mapping[str, Any]] = ()) -> BundleCheck:
    """Check ``bundle`` (parsed JSON) offline; never raises for a bad bundle.

    With ``trusted`` keys, only those may have signed the checkpoint; without, the
    bundle's own keys are used (the caller should compare the printed key id with one
    it knows).
    """
    try:
        return _verify(bundle, trusted)
    except (KeyError, TypeError, ValueError, AttributeError, SigningKeyError) as exc:
        return BundleCheck(0, 0, None, None, f"the bundle is malformed: {exc}")


def _verify(bundle: Any, trusted: Sequence[Mapping[str, Any]]) -> BundleCheck:
    if not isinstance(bundle, Mapping) or bundle.get("type") != BUNDLE_TYPE:
        return BundleCheck(0, 0, None, None, f"not a `{BUNDLE_TYPE}` document")
    checkpoint = Checkpoint.from_json(bundle["checkpoint"])
    report, links = bundle["report"], list(bundle["events"])
    cited = list({x["seq"]: x for e in report["entries"] for f in e["evidence"]
                  for x in f["examples"]}.values())

    def failed(problem: str) -> BundleCheck:
        return BundleCheck(len(cited), len(links), checkpoint.seq, checkpoint.kid, problem)

    verifiers: dict[str, Verifier] = {}
    for jwk in (trusted or bundle.get("keys") or ()):
        verifier = PublicKeyVerifier.from_jwk(jwk)
        verifiers[verifier.kid] = verifier
    if trusted and checkpoint.kid not in verifiers:
        return failed(f"the checkpoint is signed by key `{checkpoint.kid}`, not a trusted key")
    wrong = check_checkpoint(checkpoint, verifiers)
    if wrong is not None:
        return failed(wrong[1])
    by_seq: dict[int, Mapping[str, Any]] = {}
    previous: Mapping[str, Any] | None = None
    for link in links:
        seq, body = int(link["seq"]), canonical_json(link["event"])
        if previous is not None and (seq != int(previous["seq"]) + 1
                                     or link["prev_hash"] != previous["hash"]):
            return failed(f"the chain breaks at position {seq}")
        if chain_hash(str(link["prev_hash"]), body) != link["hash"]:
            return failed(f"the event at position {seq} does not match its hash: it was "
                          "changed")
        by_seq[seq] = link
        previous = link
    if previous is None or (int(previous["seq"]), previous["hash"]) != (checkpoint.seq,
                                                                       checkpoint.hash):
        return failed("the chain does not end at the signed checkpoint")
    for example in cited:
        link = by_seq.get(int(example["seq"]))
        if link is None or link["hash"] != example["hash"] or \
                link["event"].get("id") != example["id"]:
            return failed(f"cited event `{example['id']}` is not in the chain as cited")
    named = report.get("checkpoint") or {}
    if (named.get("seq"), named.get("hash")) != (checkpoint.seq, checkpoint.hash):
        return failed("the report names another checkpoint")
    return BundleCheck(len(cited), len(links), checkpoint.seq, checkpoint.kid)


def key_id(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint a reader compares with the key it trusts."""
    return thumbprint(dict(jwk))
