"""A review through the API names the manifest it adopts: without a manifest in the body,
``expected_digest`` is required (400 ``review_digest_missing``) and must still be the
digest of the manifest the agent presents (409 ``manifest_changed``)."""

from __future__ import annotations

import pytest

from proctor.identity import TrustState
from tests.identity.factories import manifest

from .conftest import CODER, Api
from .test_authentication import assert_problem

pytestmark = pytest.mark.anyio


def _reviews(api: Api) -> list[str]:
    return [e.event["outcome"] for e in api.events() if e.event["action"] == "agent.review"]


async def test_a_review_that_names_no_digest_is_refused_and_changes_nothing(
        agents: Api) -> None:
    api = agents
    api.runtime.registry.present_manifest(CODER, manifest(model_id="v2"))
    path = f"/v1/agents/{CODER}/review"
    assert_problem(await api.client.post(path, headers=api.admin, json={}),
                   400, "review_digest_missing")
    assert_problem(await api.client.post(path, headers=api.admin,
                                         json={"expected_digest": ""}),
                   400, "review_digest_missing")
    assert api.runtime.registry.get(CODER).trust_state is TrustState.DRIFTED
    assert _reviews(api) == []


async def test_a_review_adopts_only_the_manifest_the_reviewer_looked_at(agents: Api) -> None:
    api = agents
    looked_at = api.runtime.registry.present_manifest(CODER, manifest(model_id="v2"))
    api.runtime.registry.present_manifest(CODER, manifest(model_id="v3-sneaky"))
    path = f"/v1/agents/{CODER}/review"
    stale = await api.client.post(path, headers=api.admin,
                                  json={"expected_digest": looked_at.review_digest})
    assert_problem(stale, 409, "manifest_changed")
    assert api.runtime.registry.get(CODER).trust_state is TrustState.DRIFTED
    shown = (await api.client.get(f"/v1/agents/{CODER}", headers=api.admin)).json()
    reviewed = await api.client.post(path, headers=api.admin,
                                     json={"expected_digest": shown["presented_digest"]})
    assert reviewed.status_code == 200, reviewed.text
    assert (reviewed.json()["trust_state"], reviewed.json()["manifest"]["model_id"]) == (
        "trusted", "v3-sneaky")
    assert _reviews(api) == ["trusted"]
