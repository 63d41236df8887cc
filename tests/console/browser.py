"""Debian's chromium driven by Playwright, and the checks every browser test makes.

Playwright cannot download its own browsers here, so the system's chromium is
used. Outside CI a missing chromium skips the browser tests; with ``CI=true``
it fails them: CI must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("PROCTOR_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium per test module. Not per session: Playwright's sync API keeps an
    event loop running in this thread, which async tests of later modules need free."""
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        if IN_CI:
            pytest.fail(f"chromium is not installed at {CHROMIUM} (CI must run browser tests)")
        pytest.skip(f"chromium is not installed at {CHROMIUM}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page, and what it did that a user would not see: console errors (CSP
    violations among them), uncaught errors, and dialogs (an alert is an XSS)."""

    page: Page
    errors: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    confirms: list[str] = field(default_factory=list)

    def screenshot(self, name: str, page: Page | None = None) -> Path:
        """Save the (whole) page as ``test-artifacts/console/<name>.png``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        assert self.alerts == [], f"a script ran: {self.alerts}"
        assert self.errors == [], f"the page logged errors: {self.errors}"


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    seen = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.errors.append(message.text)

    def on_dialog(dialog: Dialog) -> None:
        if dialog.type == "confirm":
            seen.confirms.append(dialog.message)
            dialog.accept()
        else:
            seen.alerts.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    page.on("dialog", on_dialog)
    yield seen
    context.close()
