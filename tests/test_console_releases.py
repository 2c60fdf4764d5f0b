"""The console's Releases page and the public page's current release, in
headless Chromium against a real controller with builds on, a real agent
that made a gpkg and uploaded it (written by Portage's own gpkg code,
support/gpkg_build.py: a release of a real emerge build is
tests/test_releases.py's), one more written into staging the same way
(tools/gpkgs.py), releases cut and signed by the controller with
real gpg (support.fleet): the list with current and
previous marked, a manifest, cut, promote, the diff and rollback through
their confirmation dialogs (what the API reports changes with them), a
refused cut's reason, delete, and the current release on the status page.

Screenshots go to test-artifacts/console/ (releases, releases-diff,
releases-refused, public-release).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from swarm.controller.release_cadence import WEEKDAYS

from support.browser import WAIT_MS, Problems, shot
from support.fleet import Fleet, admin, builders, start_fleet
from support.gpkgs import WRITE_COMMAND, inject

pytestmark = pytest.mark.timeout(300)

FIRST = "swarm-test/leaf-data"  # built by the drone, in the fleet's first release
LATER = "swarm-test/leaf-hello-1"  # staged after it (written, tools/gpkgs.py): the next cut adds it


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One release cut and promoted with FIRST; LATER staged since (staging changed)."""
    # A weekly schedule two days ahead: shown on the page, never due during the module.
    weekday = WEEKDAYS[(datetime.now().weekday() + 2) % 7]
    s = start_fleet(
        tmp_path_factory.mktemp("releases"),
        builders(1),
        "--release-schedule",
        f"weekly:{weekday}:03:00",
        "--auto-promote-after",
        "1d",
        portage=True,
        command=WRITE_COMMAND,
    )
    try:
        s.wait_complete(s.queue(FIRST)["session"]["id"])
        first = admin(s, "POST", "/admin/api/releases", {"notes": "the first one"})
        admin(s, "POST", f"/admin/api/releases/{first['version']}/promote")
        assert s.controller_prefix is not None
        inject(s.controller_prefix, LATER)
        yield s
    finally:
        s.stop()


def listing(swarm: Fleet) -> dict[str, Any]:
    answer: dict[str, Any] = admin(swarm, "GET", "/admin/api/releases")
    return answer


def open_releases(browser: BrowserContext, swarm: Fleet) -> tuple[Page, Problems]:
    """Sign in on the way to the Releases page, as a bookmark of it would."""
    page = browser.new_page()
    problems = Problems(page)
    page.goto(f"{swarm.controller.admin_url}/#/releases")
    expect(page).to_have_url(re.compile(r"/login#/releases$"))
    page.fill("#key", swarm.controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(r"/#/releases$"), timeout=WAIT_MS)
    return page, problems


def row(page: Page, version: str) -> Locator:
    return page.locator(f'tr[data-release="{version}"]')


def confirm(page: Page, title: str, *says: str, button: str) -> None:
    """The dialog names the change; confirm it."""
    dialog = page.locator("dialog.dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".dialog-title")).to_have_text(title)
    for text in says:
        expect(dialog).to_contain_text(text)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).not_to_be_visible()


def cut_from_page(page: Page, notes: str, *, force: bool = False) -> str:
    """Cut with the form; the version its dialog says the release will have."""
    page.fill("#release-notes", notes)
    if force:
        page.check("#release-force")
    page.get_by_role("button", name="Cut release…").click()
    named = re.search(r"a new release, (v[\d.]+(?:-\d+)?)\.", page.locator("dialog.dialog").inner_text())
    assert named, page.locator("dialog.dialog").inner_text()
    confirm(page, "Cut a release from staging?", "not promoted", button="Cut")
    return named[1]


def unexpected(problems: Problems, *statuses: int) -> list[str]:
    """The page's problems, less the failed loads of answers the test provoked."""
    return [p for p in problems.unexpected() if not any(f"status of {s} " in p for s in statuses)]


def test_the_list_marks_the_current_release_and_shows_a_manifest(
    swarm: Fleet, browser: BrowserContext
) -> None:
    page, problems = open_releases(browser, swarm)
    known = listing(swarm)
    current = known["current"]
    assert current
    expect(page.locator("nav a[data-page=releases]")).to_have_attribute("aria-current", "page")
    expect(page.locator("tr[data-release]")).to_have_count(len(known["releases"]), timeout=WAIT_MS)
    shown = page.locator("tr[data-release]").evaluate_all("rows => rows.map(r => r.dataset.release)")
    assert shown == [r["version"] for r in known["releases"]]  # newest first, as the API lists them
    r = row(page, current)
    expect(r).to_have_attribute("data-standing", "current")
    expect(r.locator(".pill")).to_have_text("current")
    expect(r.get_by_role("button", name="Promote")).to_be_disabled()
    expect(r.get_by_role("button", name="Delete")).to_be_disabled()
    rollback = r.get_by_role("button", name="Roll back")
    expect(rollback).to_be_visible()
    if known["previous"]:
        expect(rollback).to_be_enabled()
    else:  # the controller would refuse: nothing was promoted before
        expect(rollback).to_be_disabled()
        expect(rollback).to_have_attribute("title", re.compile("nothing to roll back to"))
    expect(page.locator("#releases-title + .page-sub")).to_contain_text(f"current {current}")
    schedule = known["schedule"]
    assert schedule["schedule"] == f"weekly:{WEEKDAYS[(datetime.now().weekday() + 2) % 7]}:03:00"
    line = page.locator("#release-schedule")
    expect(line).to_contain_text(f"Schedule {schedule['schedule']}")
    expect(line).to_contain_text("next cut")
    expect(line).to_contain_text("auto-promote after 24 h")
    expect(page.locator(f'.release-history li[data-release="{current}"]').first).to_contain_text("admin")

    # The manifest: every package with its cpv, size, drone and build, as the API has them.
    r.get_by_role("button", name=current).click()
    manifest = page.locator(".release-manifest")
    expect(manifest).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    detail = admin(swarm, "GET", f"/admin/api/releases/{current}")
    assert detail["packages"]
    for p in detail["packages"]:
        assert p["drone"] and p["build_id"], p  # built by the fleet's drone
        line = manifest.locator(f'tr[data-cpv="{p["cpv"]}"]')
        expect(line).to_contain_text(p["drone"])
        expect(line).to_contain_text(p["build_id"])
        expect(line.locator("td.num")).to_have_text(re.compile(r"^\d+(\.\d)? (B|KB|MB)$"))
    expect(manifest).to_contain_text(detail["signing_key"])
    expect(manifest).to_contain_text(detail["profile"])
    page.fill("#manifest-filter", "no-such-package")
    expect(manifest.locator("tr[data-cpv]")).to_have_count(0)
    expect(manifest).to_contain_text("No package matches.")
    page.fill("#manifest-filter", "")
    expect(manifest.locator("tr[data-cpv]")).to_have_count(len(detail["packages"]))
    shot(page, "releases")
    assert problems.unexpected() == []


def test_cut_promote_diff_and_rollback_through_the_dialogs(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_releases(browser, swarm)
    before = listing(swarm)
    old = before["current"]
    expect(row(page, old)).to_have_attribute("data-standing", "current", timeout=WAIT_MS)

    # Cancel leaves everything as it was.
    page.fill("#release-notes", "not this one")
    page.get_by_role("button", name="Cut release…").click()
    page.locator("dialog.dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Cut release…")).to_be_focused()
    assert [r["version"] for r in listing(swarm)["releases"]] == [r["version"] for r in before["releases"]]

    # Cut (forced: this test may follow another cut of the same staging).
    named = cut_from_page(page, "with leaf-hello\nsecond line", force=True)
    toast = page.locator('.toast-ok[data-action="cut"]')
    expect(toast).to_be_visible(timeout=60_000)
    new = toast.get_attribute("data-release")
    assert new == named and new != old
    after = listing(swarm)
    assert after["releases"][0]["version"] == new and after["current"] == old
    assert after["releases"][0]["notes"] == "with leaf-hello\nsecond line"
    expect(row(page, new)).to_be_visible(timeout=WAIT_MS)
    expect(row(page, new)).to_have_attribute("data-standing", "")
    expect(row(page, new)).to_contain_text("with leaf-hello")

    # Compare: by default from the current release to the newest.
    expect(page.locator("#diff-from")).to_have_value(old)
    expect(page.locator("#diff-to")).to_have_value(new)
    page.get_by_role("button", name="Compare").click()
    diff = page.locator("#release-diff")
    expect(diff).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    answer = admin(swarm, "GET", f"/admin/api/releases/{old}/diff/{new}")
    expect(diff.locator(".diff-added")).to_have_text(f"{len(answer['added'])} added")
    expect(diff.locator(".diff-removed")).to_have_text(f"{len(answer['removed'])} removed")
    expect(diff.locator(".diff-changed")).to_have_text(f"{len(answer['changed'])} changed")
    for p in answer["added"]:
        expect(diff.locator(f'tr[data-cpv="{p["cpv"]}"]')).to_be_visible()
    shot(page, "releases-diff")

    # Promote names both releases; the API then has the new one current.
    row(page, new).get_by_role("button", name="Promote").click()
    confirm(page, f"Promote {new}?", f"{old}, current now, becomes the previous release", button="Promote")
    expect(row(page, new)).to_have_attribute("data-standing", "current", timeout=WAIT_MS)
    expect(row(page, old)).to_have_attribute("data-standing", "previous")
    promoted = listing(swarm)
    assert (promoted["current"], promoted["previous"]) == (new, old)
    latest = promoted["promotions"][0]
    assert latest["version"] == new and latest["action"] == "promote" and latest["by"].startswith("admin:")
    expect(row(page, old).get_by_role("button", name="Delete")).to_be_disabled()

    # Roll back: the previous one is current again.
    row(page, new).get_by_role("button", name="Roll back").click()
    confirm(page, f"Roll back {new}?", f"{old} becomes the current release again", button="Roll back")
    expect(row(page, old)).to_have_attribute("data-standing", "current", timeout=WAIT_MS)
    assert listing(swarm)["current"] == old
    expect(page.locator('.toast-ok[data-action="rollback"]')).to_contain_text(f"Rolled back to {old}")

    # Delete: one cut by someone else meanwhile (the list follows by itself), never the current one.
    extra = admin(swarm, "POST", "/admin/api/releases", {"notes": "to delete", "force": True})["version"]
    expect(row(page, extra)).to_be_visible(timeout=WAIT_MS)
    expect(row(page, old).get_by_role("button", name="Delete")).to_be_disabled()
    row(page, extra).get_by_role("button", name="Delete").click()
    confirm(page, f"Delete {extra}?", "cannot be undone", button="Delete")
    expect(row(page, extra)).to_have_count(0, timeout=WAIT_MS)
    after = listing(swarm)
    assert extra not in [r["version"] for r in after["releases"]]
    # A deleted release's name is never given again: the next cut's is after it.
    assert after["next_version"] and after["next_version"] != extra
    assert after["next_version"].startswith(extra.split("-")[0])
    assert problems.unexpected() == []


def test_a_refused_cut_shows_the_reason(swarm: Fleet, browser: BrowserContext) -> None:
    # Staging as the newest release has it: a cut without force is refused.
    admin(swarm, "POST", "/admin/api/releases", {"notes": "staging as it is", "force": True})
    status, body = swarm.controller.admin("POST", "/admin/api/releases", json.dumps({"notes": "x"}).encode())
    assert status == 409, body
    reason = body["error"]["message"]
    count = len(listing(swarm)["releases"])

    page, problems = open_releases(browser, swarm)
    expect(page.locator("tr[data-release]")).to_have_count(count, timeout=WAIT_MS)
    cut_from_page(page, "nothing new")
    error = page.locator("#cut-error")
    expect(error).to_have_text(f"Not cut: {reason}", timeout=WAIT_MS)
    expect(error).to_have_attribute("data-status", "409")
    expect(page.locator('.toast-error[data-action="cut"]')).to_contain_text(reason)
    shot(page, "releases-refused")
    assert len(listing(swarm)["releases"]) == count
    assert unexpected(problems, 409) == []


def test_the_public_page_shows_the_current_release(swarm: Fleet, browser: BrowserContext) -> None:
    known = swarm.controller.get("/releases.json")
    current = next(r for r in known["releases"] if r["current"])
    page = browser.new_page()
    problems = Problems(page)
    page.goto(swarm.controller.public_url + "/")
    card = page.locator("#release-now")
    expect(card).to_have_attribute("data-state", "current", timeout=WAIT_MS)
    expect(page.locator("#release-version")).to_have_text(current["version"])
    expect(page.locator("#release-packages")).to_have_text(str(current["package_count"]))
    expect(page.locator("#release-date")).to_have_text(re.compile(r"\b20\d\d\b"))  # the year it was cut
    expect(card.get_by_role("link", name="the release key")).to_have_attribute("href", "/releases/key.asc")
    listed = page.locator("#releases li[data-release]")
    expect(listed).to_have_count(min(10, len(known["releases"])))
    expect(page.locator(f'#releases li[data-release="{current["version"]}"] .pill')).to_have_text("current")
    shot(page, "public-release")
    assert problems.unexpected() == []

    # On a phone the card fits the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#release-version")).to_be_in_viewport()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
