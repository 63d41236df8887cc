"""The approvals part's and the console's public surface is what `__all__` says."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["proctor.approvals", "proctor.server.console"])
def test_every_exported_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    assert len(set(module.__all__)) == len(module.__all__)


def test_the_channels_share_one_desk() -> None:
    import proctor.approvals as approvals

    assert {"ApprovalDesk", "ApprovalQueue", "SimilarApprovals", "WebhookDelivery",
            "sign"} <= set(approvals.__all__)
