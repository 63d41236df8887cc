"""Hostile addresses get a page, never a crash: an audit feed cursor past any
sequence number, and NUL characters in ids, on both backends."""

from __future__ import annotations

import pytest

from tests.console.conftest import *  # noqa: F403 (the fixtures)
from tests.console.conftest import Console

pytestmark = pytest.mark.anyio


async def test_an_audit_feed_cursor_beyond_any_event_is_an_empty_feed(console: Console) -> None:
    for after in ("99999999999999999999999", str(2**63)):
        feed = await console.page(f"/console/audit/feed?after={after}")
        assert feed.status_code == 200, feed.text
        assert "<tr" not in feed.text
        assert int(feed.headers["x-last-seq"]) >= 0


async def test_a_nul_character_in_an_address_is_a_4xx_page(console: Console) -> None:
    for path in ("/console/tasks/%00", "/console/approvals/%00", "/console/audit?task=%00"):
        page = await console.page(path)
        assert page.status_code < 500, (path, page.text[:300])
        assert "content-security-policy" in page.headers
