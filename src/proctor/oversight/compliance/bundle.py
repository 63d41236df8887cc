"""The evidence bundle, and checking it offline.

A bundle is one JSON document::

    {"type": "proctor.compliance.bundle", "v": 2,
     "report": {...the report's JSON...},
     "report_signature": {"kid", "payload", "signature"},
     "checkpoint": {"seq", "hash", "kid", "signed_at", "payload", "signature"},
     "keys": [public JWK, ...],
     "events": [{"seq", "prev_hash", "hash", "event"}, ...]}

``events`` is the chain from the first cited event up to the checkpoint, every link
with its body. :func:`verify_bundle` checks, with nothing but the bundle (and, when
given, the key the reader trusts):

1. the checkpoint's signature, with the key named by its ``kid``;
2. the report's signature: the signed payload names the SHA-256 of the report's
   canonical JSON, so counts, statuses, gaps and the window are proctor's, unedited;
3. every link: its hash is ``sha256(prev_hash || canonical body)`` and its
   ``prev_hash`` is the hash before it, positions without a hole;
4. the last link is the checkpoint's position and hash;
5. every example the report cites, one by one, is in the chain with the id, hash,
   time and action it cites, inside the report's window, and is an event of the
   query it is cited for;
6. the report names this checkpoint.

Any edit to a cited event changes its hash, which breaks step 3 or 4; any edit to the
report breaks step 2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proctor.audit import Checkpoint, StoredEvent, canonical_json, chain_hash, iter_events
from proctor.audit.checkpoints import check_checkpoint
from proctor.documents import parse_json
from proctor.errors import DocumentError, SigningKeyError
from proctor.jose import b64url_decode, b64url_encode, thumbprint
from proctor.keys import PublicKeyVerifier, Signer, Verifier
from proctor.oversight.compliance.evidence import QUERIES
from proctor.oversight.compliance.report import ComplianceReport
from proctor.store import Store

__all__ = ["BUNDLE_TYPE", "BundleCheck", "key_id", "make_bundle", "sign_report", "verify_bundle"]

BUNDLE_TYPE = "proctor.compliance.bundle"
BUNDLE_VERSION = 2
REPORT_SIGNATURE_TYPE = "proctor.compliance.report.signature"
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
                keys: Sequence[Mapping[str, Any]], signer: Signer) -> dict[str, Any]:
    """The bundle of ``report``, signed by ``signer``: its checkpoint, the public ``keys``
    and the chain from the first cited event to the checkpoint. Refused without a
    covering checkpoint."""
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
    document = report.as_json()
    return {"type": BUNDLE_TYPE, "v": BUNDLE_VERSION, "report": document,
            "report_signature": sign_report(signer, document),
            "checkpoint": checkpoint.as_json(), "keys": [dict(k) for k in keys],
            "events": [s.as_json() for s in links]}


def _report_digest(document: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


def sign_report(signer: Signer, document: Mapping[str, Any]) -> dict[str, str]:
    """A signature over the report's canonical JSON (by its digest), by ``signer``."""
    payload = canonical_json({"type": REPORT_SIGNATURE_TYPE, "v": 1, "kid": signer.kid,
                              "report": _report_digest(document)})
    return {"kid": signer.kid, "payload": payload.decode("utf-8"),
            "signature": b64url_encode(signer.sign(payload))}


def _check_report_signature(signed: Any, document: Any,
                            verifiers: Mapping[str, Verifier]) -> str | None:
    """Why the report's signature does not hold, or None."""
    if not isinstance(signed, Mapping):
        return "the report is not signed"
    kid, payload, signature = (str(signed.get(k, "")) for k in ("kid", "payload", "signature"))
    verifier = verifiers.get(kid)
    if verifier is None:
        return f"the report is signed by key `{kid[:80]}`, not a trusted key"
    try:
        raw = b64url_decode(signature)
    except ValueError:
        raw = b""
    if not verifier.verify(payload.encode("utf-8"), raw):
        return "the report's signature does not hold"
    try:
        claims = parse_json(payload, what="report signature")
    except DocumentError:
        claims = None
    if not isinstance(claims, Mapping) or (claims.get("type"), claims.get("kid"),
                                           claims.get("report")) != (
            REPORT_SIGNATURE_TYPE, kid, _report_digest(document)):
        return "the report was changed after it was signed"
    return None


def _cited(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every example the report cites, with the query it is cited for (none merged)."""
    return [(str(found["query"]), example) for entry in report["entries"]
            for found in entry["evidence"] for example in found["examples"]]


def _citation_problem(query: str, example: Mapping[str, Any],
                      link: Mapping[str, Any] | None, since: datetime,
                      until: datetime) -> str | None:
    name = f"cited event `{str(example.get('id'))[:80]}`"
    if link is None or link["hash"] != example["hash"]:
        return f"{name} is not in the chain as cited"
    event = link["event"]
    if (event.get("id"), event.get("time"), event.get("action")) != (
            example["id"], example["time"], example["action"]):
        return f"{name} is not in the chain as cited"
    if not since <= datetime.fromisoformat(str(event["time"])) < until:
        return f"{name} is outside the report's window"
    test = QUERIES.get(query)
    if test is None or not test[1](event):
        return f"{name} is not evidence of `{query[:80]}`"
    return None


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
    if bundle.get("v") != BUNDLE_VERSION:
        return BundleCheck(0, 0, None, None, f"bundle version `{str(bundle.get('v'))[:20]}` "
                           f"is not {BUNDLE_VERSION}: make the bundle again")
    checkpoint = Checkpoint.from_json(bundle["checkpoint"])
    report, links = bundle["report"], list(bundle["events"])
    cited = _cited(report)

    events = len({str(example.get("id")) for _, example in cited})

    def failed(problem: str) -> BundleCheck:
        return BundleCheck(events, len(links), checkpoint.seq, checkpoint.kid, problem)

    verifiers: dict[str, Verifier] = {}
    for jwk in (trusted or bundle.get("keys") or ()):
        verifier = PublicKeyVerifier.from_jwk(jwk)
        verifiers[verifier.kid] = verifier
    if trusted and checkpoint.kid not in verifiers:
        return failed(f"the checkpoint is signed by key `{checkpoint.kid}`, not a trusted key")
    wrong = check_checkpoint(checkpoint, verifiers)
    if wrong is not None:
        return failed(wrong[1])
    unsigned = _check_report_signature(bundle.get("report_signature"), report, verifiers)
    if unsigned is not None:
        return failed(unsigned)
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
    window = report["window"]
    since, until = (datetime.fromisoformat(str(window[k])) for k in ("since", "until"))
    for query, example in cited:
        seq = example["seq"]
        link = by_seq.get(seq) if type(seq) is int else None
        problem = _citation_problem(query, example, link, since, until)
        if problem is not None:
            return failed(problem)
    named = report.get("checkpoint") or {}
    if (named.get("seq"), named.get("hash")) != (checkpoint.seq, checkpoint.hash):
        return failed("the report names another checkpoint")
    return BundleCheck(events, len(links), checkpoint.seq, checkpoint.kid)


def key_id(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint a reader compares with the key it trusts."""
    return thumbprint(dict(jwk))
