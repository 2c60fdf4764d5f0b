"""Headless Chromium for the console tests: Debian's /usr/bin/chromium driven
by Playwright (never a browser Playwright downloads), a fresh context per
test, the page's errors collected, screenshots in test-artifacts/console/,
and logging in the way an admin does."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect, sync_playwright

from support.procs import Controller

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's chromium, started once (Playwright gives it a fresh profile directory)."""
    assert CHROMIUM.exists(), "the console tests need Debian's chromium: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[BrowserContext]:
    """A browser of its own for each test: no cookies, no session storage."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context
    finally:
        context.close()


class Problems:
    """Uncaught errors and console errors of a page (CSP refusals among them);
    a refused login's 401 is the only failed load that is expected."""

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        page.on("pageerror", lambda exc: self.seen.append(f"uncaught: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(message.text)

    def unexpected(self) -> list[str]:
        return [p for p in self.seen if "status of 401" not in p]


def sent_text(page: Page) -> list[str]:
    """The text frames the page sends on its websockets from now on, in order."""
    frames: list[str] = []

    def keep(frame: str | bytes) -> None:
        if isinstance(frame, str):
            frames.append(frame)

    page.on("websocket", lambda ws: ws.on("framesent", keep))
    return frames


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Written here: Playwright would write it from a thread pool of its own that outlives the test.
    (ARTIFACTS / f"{name}.png").write_bytes(page.screenshot())


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET that does not follow redirects."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def log_in(page: Page, controller: Controller, lands_on: str = "topology") -> None:
    """Open the console, get sent to /login, sign in with the admin key; the console opens
    on its first page (the topology)."""
    page.goto(controller.admin_url + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#key", controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(rf"/#/{lands_on}$"), timeout=WAIT_MS)
