"""The console's Test builds page and the public page's Test builds section,
in headless Chromium against a real controller whose Portage (its own
Gentoo prefix with the test overlay) resolves the atoms, and no drone, so
that a test build asked for stays queued: a token created on the page with
its secret shown once (copied, then gone), listed and revoked behind a
dialog (the API then refuses the secret); a refused token shows the
controller's reason on its field; a test build submitted over HTTP with a
token shows queued on both pages (the public one without the token, the
email or the webhook) and is cancelled from the console.

Screenshots go to test-artifacts/console/ (testbuilds, testbuilds-secret,
public-testbuilds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from support.browser import WAIT_MS, Problems, shot
from support.fleet import Fleet, admin, start_fleet
from support.procs import http

pytestmark = pytest.mark.timeout(180)

PACKAGE = "swarm-test/leaf-data"  # in the test overlay: resolves in the controller's tree
EMAIL = "carol@example.org"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    s = start_fleet(tmp_path_factory.mktemp("testbuilds"), (), portage=True)
    try:
        yield s
    finally:
        s.stop()


def submit(swarm: Fleet, secret: str, package: str, **extra: Any) -> tuple[int, Any]:
    """POST /api/v1/test-build on the public tier, as a user's curl does."""
    return http(
        "POST",
        swarm.controller.public_url + "/api/v1/test-build",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        body=json.dumps({"package": package, **extra}).encode(),
    )


def tokens(swarm: Fleet) -> dict[str, dict[str, Any]]:
    listed = admin(swarm, "GET", "/admin/api/test-build-tokens")["tokens"]
    return {t["id"]: t for t in listed}


def open_page(browser: BrowserContext, swarm: Fleet) -> tuple[Page, Problems]:
    """Sign in on the way to the Test builds page, as a bookmark of it would."""
    page = browser.new_page()
    problems = Problems(page)
    page.goto(f"{swarm.controller.admin_url}/#/testbuilds")
    expect(page).to_have_url(re.compile(r"/login#/testbuilds$"))
    page.fill("#key", swarm.controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(r"/#/testbuilds$"), timeout=WAIT_MS)
    expect(page.locator("nav a[data-page=testbuilds]")).to_have_attribute("aria-current", "page")
    return page, problems


def confirm(page: Page, title: str, *says: str, button: str) -> None:
    """The dialog names the change; confirm it."""
    dialog = page.locator("dialog.dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".dialog-title")).to_have_text(title)
    for text in says:
        expect(dialog).to_contain_text(text)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).not_to_be_visible()


def token_row(page: Page, token_id: str) -> Locator:
    return page.locator(f'tr[data-token="{token_id}"]')


def test_a_token_is_created_with_its_secret_shown_once_then_revoked(
    swarm: Fleet, browser: BrowserContext
) -> None:
    page, problems = open_page(browser, swarm)
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=swarm.controller.admin_url)

    # A rate the controller cannot read: its reason, on the rate field.
    page.get_by_label("User").fill("alice")
    page.get_by_label("Rate").fill("often")
    page.get_by_role("button", name="Create token").click()
    error = page.locator("#token-error")
    expect(error).to_contain_text("Not created:", timeout=WAIT_MS)
    expect(error).to_have_attribute("data-status", "400")
    expect(page.locator("#token-rate")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#token-rate")).to_be_focused()
    assert all(t["user"] != "alice" for t in tokens(swarm).values())

    page.get_by_label("Rate").fill("5/h")
    page.get_by_label("Burst").fill("2")
    page.get_by_label("Max queued").fill("3")
    page.get_by_role("button", name="Create token").click()
    panel = page.locator(".tb-secret")
    expect(panel).to_be_visible(timeout=WAIT_MS)
    expect(error).to_be_hidden()
    token_id = panel.get_attribute("data-token")
    assert token_id
    secret = page.locator("#token-secret").input_value()
    assert len(secret) >= 20, secret
    expect(page.locator("#token-secret")).to_be_focused()

    # Listed by the page and the API, with its limits; the secret never in a listing.
    listed = tokens(swarm)[token_id]
    assert (listed["user"], listed["rate"], listed["burst"], listed["max_queued"]) == ("alice", "5/h", 2, 3)
    assert listed["revoked_at"] is None
    row = token_row(page, token_id)
    expect(row).to_have_attribute("data-state", "active", timeout=WAIT_MS)
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("5/h · burst 2 · at most 3 queued")
    assert secret not in json.dumps(admin(swarm, "GET", "/admin/api/test-build-tokens"))

    panel.get_by_role("button", name="Copy").click()
    expect(page.locator('.toast-ok[data-action="copy"]')).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == secret
    shot(page, "testbuilds-secret")

    # Done: the secret is gone from the page, and not shown again after a reload.
    panel.get_by_role("button", name="Done").click()
    expect(panel).to_be_hidden()
    assert secret not in page.content()
    page.reload()
    expect(token_row(page, token_id)).to_be_visible(timeout=WAIT_MS)
    assert secret not in page.content()

    # The secret works until the token is revoked.
    status, body = submit(swarm, secret, "=swarm-test/leaf-data-1")
    assert status == 202, body
    admin(swarm, "POST", f"/admin/api/test-builds/{body['id']}/cancel")

    token_row(page, token_id).get_by_role("button", name=re.compile("^Revoke")).click()
    confirm(page, "Revoke alice's token?", token_id, "refused (401)", button="Revoke")
    expect(token_row(page, token_id)).to_have_attribute("data-state", "revoked", timeout=WAIT_MS)
    expect(page.locator("#tb-tokens-title")).to_be_focused()  # not lost with the Revoke button
    expect(token_row(page, token_id).get_by_role("button", name=re.compile("^Revoke"))).to_have_count(0)
    assert tokens(swarm)[token_id]["revoked_at"]
    status, body = submit(swarm, secret, PACKAGE)
    assert status == 401, body
    # The refused create's 400 is the one failed load.
    assert [p for p in problems.unexpected() if "status of 400 " not in p] == []


def test_a_queued_test_build_shows_on_both_pages_and_is_cancelled_from_the_console(
    swarm: Fleet, browser: BrowserContext
) -> None:
    made = admin(
        swarm,
        "POST",
        "/admin/api/test-build-tokens",
        {"user": "carol", "rate": "5/h", "burst": 2, "max_queued": 3},
    )
    secret, token_id = made["secret"], made["id"]
    status, queued = submit(swarm, secret, PACKAGE, notify=EMAIL)
    assert status == 202 and queued["state"] == "queued", queued
    build_id = queued["id"]

    # The console: in the queue with who asked, where it stands and whom to tell.
    page, problems = open_page(browser, swarm)
    row = page.locator(f'tr[data-build="{build_id}"]')
    expect(row).to_have_attribute("data-state", "queued", timeout=WAIT_MS)
    expect(page.locator(f'#tb-queue-title + .panel tr[data-build="{build_id}"]')).to_have_count(1)
    expect(row).to_contain_text("swarm-test/leaf-data-1")
    expect(row).to_contain_text("carol")
    expect(row).to_contain_text(EMAIL)
    expect(row.locator(".tb-result")).to_contain_text(f"#{queued['position']} in the queue")
    row.get_by_role("button", name=re.compile("^Log of")).click()
    log = page.locator(".tb-log")
    expect(log).to_have_attribute("data-state", "waiting")
    expect(log).to_contain_text("the log follows once the build starts")
    shot(page, "testbuilds")

    # The public page: the same build, without the token, the secret or the email.
    public = browser.new_page()
    public_problems = Problems(public)
    public.goto(swarm.controller.public_url + "/")
    item = public.locator(f'#testbuilds li[data-testbuild="{build_id}"]')
    expect(item).to_have_attribute("data-state", "queued", timeout=WAIT_MS)
    expect(item.locator(".pill")).to_have_text("queued")
    expect(item).to_contain_text("swarm-test/leaf-data-1")
    expect(public.locator("#testbuilds-card")).to_contain_text("never released")
    html = public.content()
    for private in (secret, token_id, EMAIL):
        assert private not in html, private
    shot(public, "public-testbuilds")
    assert public_problems.unexpected() == []

    # Cancel from the console: asked first, then in the history as cancelled, as the API has it.
    row.get_by_role("button", name=re.compile("^Cancel")).click()
    confirm(
        page, "Cancel the test build of swarm-test/leaf-data-1?", "leaves the queue", button="Cancel build"
    )
    history_row = page.locator(f'#tb-history-title + .panel tr[data-build="{build_id}"]')
    expect(history_row).to_have_attribute("data-state", "cancelled", timeout=WAIT_MS)
    expect(history_row.get_by_role("button", name=re.compile("^Cancel"))).to_be_hidden()
    expect(page.locator(f'#tb-queue-title + .panel tr[data-build="{build_id}"]')).to_have_count(0)
    expect(history_row.get_by_role("button", name=re.compile("^Log of"))).to_be_hidden()  # it never ran
    expect(page.locator("#tb-queue-title")).to_be_focused()  # not lost with the Cancel button
    status, after = http("GET", f"{swarm.controller.public_url}/api/v1/test-build/{build_id}")
    assert status == 200 and after["state"] == "cancelled", after
    public.reload()  # (its own poll of test builds comes every 10 s)
    expect(item).to_have_attribute("data-state", "cancelled", timeout=WAIT_MS)
    assert problems.unexpected() == []
