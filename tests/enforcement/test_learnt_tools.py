"""A tool learnt from the store (``KnownTools.teach``, on any thread: a decision's, the
change feed's) never replaces the definition this process's gateway gave the engine
after that thread looked at the catalog: the gateway's labels win, as they do over a
stored tool the engine knew before."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from proctor.errors import GrantError
from proctor.policy.catalog import Sensitivity, ToolSpec
from proctor.runtime import Runtime

from .conftest import SUPPORT, Agents
from .test_decided_entity import activate_risky_grants
from .test_stale_views import heard_everything

WAIT = 60


WIKI = ToolSpec("wiki", "read_page", Sensitivity.INTERNAL,
                input_schema={"type": "object", "properties": {"page": {"type": "string"}}})
OWN_WIKI = ToolSpec("wiki", "read_page", Sensitivity.RESTRICTED,
                    input_schema=dict(WIKI.input_schema))
NO_RESTRICTED_GRANTS = ('@id("no-restricted-grants")\n'
                        'forbid (principal, action == Action::"grant:issue", resource)\n'
                        'when { resource.sensitivity_level >= 3 };\n')


def test_a_tool_learnt_from_the_store_never_replaces_the_gateways_own_definition(
        runtime: Runtime, other: Runtime, agents: Agents) -> None:
    """Another process stored the tool as internal; a thread here looked at the catalog
    (the tool unknown) and is about to add the stored one when this process's gateway
    gives the engine its own definition (restricted): the stored one is not put over it,
    and grants for the tool are decided on restricted."""
    activate_risky_grants(runtime, NO_RESTRICTED_GRANTS)
    engine, here = runtime.engine, threading.current_thread()
    extend = engine.extend_catalog
    looked, go = threading.Event(), threading.Event()

    def extend_later(tools: Any, **kwargs: Any) -> Any:
        # the first thread to learn it (this test's learner, or on PostgreSQL perhaps the
        # feed's, told of the stored tool) waits, the catalog looked at, the stored tool
        # about to be added
        if threading.current_thread() is not here and not looked.is_set():
            looked.set()
            assert go.wait(WAIT)
        return extend(tools, **kwargs)

    engine.extend_catalog = extend_later  # type: ignore[method-assign]
    learner = threading.Thread(target=runtime.tools.teach, args=(engine,))
    try:
        other.tools.record([WIKI])
        learner.start()
        assert looked.wait(WAIT)
        extend([OWN_WIKI])  # what the gateway's tools/list does with its own labels
    finally:
        go.set()
        if learner.is_alive():
            learner.join(WAIT)
    assert not learner.is_alive()
    heard_everything(runtime)  # and whatever the feed's thread learnt, learnt
    known = engine.catalog.by_action(OWN_WIKI.action_id)
    assert known is not None and known.sensitivity is Sensitivity.RESTRICTED
    with pytest.raises(GrantError) as refused:
        agents.grant(SUPPORT, [{"tool": "wiki/read_page"}])
    assert refused.value.code == "issuance_denied"
