"""The policy decision point: Cedar schema, policy store, ``decide``, explain, tests.

>>> from proctor.policy import PolicyEngine, ToolCatalog
>>> engine = PolicyEngine(ToolCatalog())
>>> engine.active is None   # no policies yet: every request is denied
True
"""

from proctor.policy.bundle import PolicyBundle, load_bundle
from proctor.policy.catalog import Sensitivity, ToolCatalog, ToolSpec, load_catalog
from proctor.policy.compiled import CompiledPolicies
from proctor.policy.context import call_context
from proctor.policy.engine import PolicyEngine, ShadowDifference
from proctor.policy.model import Decision, DecisionRequest, EntityRef, Outcome, ReasonCode
from proctor.policy.requests import request_from_spec
from proctor.policy.revisions import PolicyRevision, PolicyStore

__all__ = [
    "CompiledPolicies",
    "Decision",
    "DecisionRequest",
    "EntityRef",
    "Outcome",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyRevision",
    "PolicyStore",
    "ReasonCode",
    "Sensitivity",
    "ShadowDifference",
    "ToolCatalog",
    "ToolSpec",
    "call_context",
    "load_bundle",
    "load_catalog",
    "request_from_spec",
]
