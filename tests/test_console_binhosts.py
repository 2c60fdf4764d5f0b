"""The console's Binhosts page and the public page's Binhosts card, in
headless Chromium against one real controller (builds on, a package staged
by Portage's own gpkg code, releases cut and signed with real gpg): the
controller's own binhost, an rsync mirror whose SSH and HTTP ports are
closed on 127.0.0.1, and a disabled one, so their states differ. The page
shows each target as the API has it; Sync all names the release and where
it goes and shows the controller's answer; the add/edit dialog shows a
400's reason on the field it names; delete asks first. A push under way and
a stale mirror's error are drawn from the real answer with them written into
it (a real push to a real mirror is the mirror tests' part).

Screenshots go to test-artifacts/console/ (binhosts, binhosts-refused,
binhosts-progress, public-binhosts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Route, WebSocket, expect

from support.browser import WAIT_MS, Problems, shot
from support.fleet import Fleet, admin, start_fleet
from support.gpkgs import inject
from support.procs import wait_for
from support.sshd import free_port

pytestmark = pytest.mark.timeout(120)

STAGED = "swarm-test/leaf-data-1"
CLOSED = free_port()  # nothing listens here: the mirror can be neither pushed to nor checked
FAR: dict[str, Any] = {
    "kind": "rsync",
    "destination": f"mirror@127.0.0.1:{CLOSED}:/srv/far",
    "url": f"http://127.0.0.1:{CLOSED}/far",
    "networks": ["tailscale"],
    "priority": 50,
    "enabled": True,
}
SPARE: dict[str, Any] = {
    **FAR,
    "destination": f"mirror@127.0.0.1:{CLOSED}:/srv/spare",
    "url": f"http://127.0.0.1:{CLOSED}/spare",
    "networks": ["lan"],
    "priority": 10,
    "enabled": False,
}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A controller with a package staged (a release can be cut) and two mirrors besides its own binhost."""
    s = start_fleet(tmp_path_factory.mktemp("binhosts"), (), portage=True)
    try:
        assert s.controller_prefix is not None
        inject(s.controller_prefix, STAGED)
        admin(s, "PUT", "/admin/api/binhosts/far", FAR)
        admin(s, "PUT", "/admin/api/binhosts/spare", SPARE)
        yield s
    finally:
        s.stop()


def listing(swarm: Fleet) -> dict[str, Any]:
    answer: dict[str, Any] = admin(swarm, "GET", "/admin/api/binhosts")
    return answer


def view(swarm: Fleet, name: str) -> dict[str, Any]:
    return next(b for b in listing(swarm)["binhosts"] if b["name"] == name)


def open_binhosts(
    browser: BrowserContext, swarm: Fleet, events: list[dict[str, Any]] | None = None
) -> tuple[Page, Problems]:
    """Sign in on the way to the Binhosts page, as a bookmark of it would; `events`
    collects what the page's /ws/events stream brings (and the URL it asked for)."""
    page = browser.new_page()
    problems = Problems(page)
    if events is not None:

        def follow(ws: WebSocket) -> None:
            if "/ws/events" in ws.url:
                events.append({"url": ws.url})
                ws.on("framereceived", lambda frame: events.append(json.loads(frame)))

        page.on("websocket", follow)
    page.goto(f"{swarm.controller.admin_url}/#/binhosts")
    expect(page).to_have_url(re.compile(r"/login#/binhosts$"))
    page.fill("#key", swarm.controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(r"/#/binhosts$"), timeout=WAIT_MS)
    return page, problems


def row(page: Page, name: str) -> Locator:
    return page.locator(f'tr[data-binhost="{name}"]')


def agreed(page: Page, swarm: Fleet, name: str) -> dict[str, Any]:
    """The target as the API has it, once the page shows the same status (a mirror's
    state may move on under the test: a health check, a retry)."""
    found: dict[str, Any] = {}

    def same() -> bool:
        found.update(view(swarm, name))
        return bool(row(page, name).get_attribute("data-status", timeout=WAIT_MS) == found["status"])

    wait_for(same, what=f"the page and the API agreeing on {name}'s status")
    return found


def confirm(page: Page, title: str, *says: str, button: str) -> None:
    """The dialog names the change; confirm it."""
    dialog = page.locator("dialog.dialog").filter(has_text=title)
    expect(dialog).to_be_visible()
    expect(dialog.locator(".dialog-title")).to_have_text(title)
    for text in says:
        expect(dialog).to_contain_text(text)
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).not_to_be_visible()


def unexpected(problems: Problems, *statuses: int) -> list[str]:
    """The page's problems, less the failed loads of answers the test provoked."""
    return [p for p in problems.unexpected() if not any(f"status of {s} " in p for s in statuses)]


def menu_item(page: Page, name: str, item: str) -> Locator:
    row(page, name).get_by_role("button", name="More").click()
    return page.get_by_role("menuitem", name=item)


def test_the_page_shows_each_binhost_as_the_api_has_it(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_binhosts(browser, swarm)
    known = listing(swarm)
    expect(page.locator("nav a[data-page=binhosts]")).to_have_attribute("aria-current", "page")
    expect(page.locator("tr[data-binhost]")).to_have_count(len(known["binhosts"]), timeout=WAIT_MS)
    shown = page.locator("tr[data-binhost]").evaluate_all("rows => rows.map(r => r.dataset.binhost)")
    assert shown == [
        b["name"] for b in known["binhosts"]
    ]  # the controller's own first, as the API lists them

    for b in known["binhosts"]:
        b = agreed(page, swarm, b["name"])
        r = row(page, b["name"])
        expect(r.locator(".pill")).to_have_text(b["status"])
        expect(r.locator(".bh-release")).to_have_text(b["release"] or "none")
        expect(r.locator(".bh-priority")).to_have_text(f"priority {b['priority']}")
        expect(r.locator(".bh-url")).to_have_attribute("href", b["url"])
        for network in b["networks"]:
            expect(r.locator(".bh-net", has_text=network)).to_be_visible()
        if not b["networks"]:
            expect(r.locator(".bh-networks")).to_contain_text("all (fallback)")

    local = row(page, "controller")
    expect(local).to_have_attribute("data-kind", "local")
    expect(local.locator(".pill")).to_have_text("healthy")
    expect(local.get_by_role("button", name="Sync now")).to_be_hidden()
    far = row(page, "far")
    expect(far).to_have_attribute("data-kind", "rsync")
    expect(far).to_contain_text(FAR["destination"])
    expect(far.locator(".bh-net")).to_have_text(["tailscale"])
    spare = row(page, "spare")
    expect(spare.locator(".pill")).to_have_text("disabled")
    expect(spare.get_by_role("button", name="Sync now")).to_be_disabled()
    expect(spare.get_by_role("button", name="Sync now")).to_have_attribute("title", re.compile("disabled"))
    # The controller's own binhost is never deleted: its menu item says why and asks nothing.
    item = menu_item(page, "controller", "Delete…")
    expect(item).to_be_disabled()  # aria-disabled: the menu still lists it, with the reason
    expect(item).to_have_attribute("title", re.compile("always there"))
    page.keyboard.press("Escape")
    expect(item).to_be_hidden()
    expect(page.locator("#binhosts-title + .page-sub")).to_contain_text(f"{len(known['binhosts'])} binhosts")
    shot(page, "binhosts")
    assert problems.unexpected() == []


def test_sync_all_names_the_release_and_where_it_goes(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_binhosts(browser, swarm)
    sync_all = page.get_by_role("button", name="Sync all…")
    if listing(swarm)["current"] is None:
        # Nothing to push: the button says so instead of asking.
        expect(sync_all).to_be_disabled(timeout=WAIT_MS)
        expect(sync_all).to_have_attribute("title", re.compile("No release is current"))
        expect(page.locator("#binhosts-title + .page-sub")).to_contain_text("no release current")

    # Promoted elsewhere (swarm-cli, the schedule): the page follows by itself.
    version = admin(swarm, "POST", "/admin/api/releases", {"notes": "for the mirrors", "force": True})[
        "version"
    ]
    admin(swarm, "POST", f"/admin/api/releases/{version}/promote")
    expect(page.locator("#binhosts-title + .page-sub")).to_have_attribute(
        "data-current", version, timeout=WAIT_MS
    )
    expect(sync_all).to_be_enabled()
    expect(row(page, "controller").locator(".bh-release")).to_have_text(version)

    # Cancel asks nothing of the controller.
    sync_all.click()
    page.locator("dialog.dialog[open]").get_by_role("button", name="Cancel").click()
    expect(sync_all).to_be_focused()

    # The dialog names the release and each enabled mirror with where it is; the page
    # shows what the controller answered (the pushes started, or why not).
    sync_all.click()
    asking = page.locator("dialog.dialog[open]")
    expect(asking).to_contain_text(f"far (127.0.0.1:{CLOSED}:/srv/far)")
    assert "spare" not in asking.inner_text()  # disabled: never pushed to
    with page.expect_response(lambda r: r.url.endswith("/admin/api/binhosts/sync")) as answered:
        confirm(page, f"Push {version} to every mirror?", version, button="Sync all")
    response = answered.value
    body = response.json()
    if response.status == 202:
        toast = page.locator('.toast-ok[data-action="sync-all"]')
        expect(toast).to_contain_text(f"Pushing {version}")
        for name in body["started"]:
            expect(toast).to_contain_text(name)
    else:
        assert response.status == 409, body
        expect(page.locator('.toast-error[data-action="sync-all"]')).to_contain_text(body["error"]["message"])

    # However the push went, the mirror's row is what the API says, with its error if it has one.
    far = agreed(page, swarm, "far")
    if far["error"] and far["status"] in ("stale", "unreachable"):
        expect(row(page, "far").locator(".bh-error")).to_have_text(far["error"])
    assert unexpected(problems, 409) == []


def test_the_dialog_shows_the_controllers_reason_on_its_field(swarm: Fleet, browser: BrowserContext) -> None:
    hostile = {
        **FAR,
        "destination": "mirror@127.0.0.1:/srv/x;touch${IFS}/tmp/owned",
        "networks": ["tailscale"],
    }
    status, refused = swarm.controller.admin("PUT", "/admin/api/binhosts/tail", json.dumps(hostile).encode())
    assert status == 400, refused
    reason = refused["error"]["message"]

    page, problems = open_binhosts(browser, swarm)
    expect(page.locator("tr[data-binhost]")).to_have_count(len(listing(swarm)["binhosts"]), timeout=WAIT_MS)
    page.get_by_role("button", name="Add mirror…").click()
    dialog = page.locator("dialog.bh-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".dialog-title")).to_have_text("Add a mirror")
    # No name, no address to PUT to: said before asking.
    dialog.get_by_role("button", name="Add").click()
    expect(page.locator("#bh-error")).to_have_attribute("data-field", "name")
    expect(page.locator("#bh-name")).to_have_attribute("aria-invalid", "true")
    page.fill("#bh-name", "tail")
    page.fill("#bh-destination", hostile["destination"])
    page.fill("#bh-url", FAR["url"])
    page.fill("#bh-networks", "tailscale, wan")
    page.fill("#bh-priority", "70")
    dialog.get_by_role("button", name="Add").click()

    error = page.locator("#bh-error")
    expect(error).to_have_text(reason, timeout=WAIT_MS)
    expect(error).to_have_attribute("data-status", "400")
    expect(error).to_have_attribute("data-field", "destination")
    expect(page.locator("#bh-destination")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#bh-destination")).to_be_focused()
    expect(dialog).to_be_visible()  # nothing typed is lost
    shot(page, "binhosts-refused")
    assert "tail" not in [b["name"] for b in listing(swarm)["binhosts"]]

    # Typing clears the mark; a good destination is saved and listed.
    page.fill("#bh-destination", f"mirror@127.0.0.1:{CLOSED}:/srv/tail")
    expect(error).to_be_hidden()
    expect(page.locator("#bh-destination")).not_to_have_attribute("aria-invalid", "true")
    dialog.get_by_role("button", name="Add").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)
    expect(page.locator('.toast-ok[data-action="save"][data-binhost="tail"]')).to_contain_text("tail added")
    saved = view(swarm, "tail")
    assert (saved["networks"], saved["priority"], saved["kind"]) == (["tailscale", "wan"], 70, "rsync")
    assert saved["updated_by"].startswith("admin:")
    expect(row(page, "tail").locator(".bh-net")).to_have_text(["tailscale", "wan"], timeout=WAIT_MS)

    # Edit: the form holds what is saved; a bad priority is refused on its field, a good one kept.
    menu_item(page, "tail", "Edit…").click()
    expect(dialog.locator(".dialog-title")).to_have_text("Edit tail")
    expect(page.locator("#bh-name")).to_have_value("tail")
    expect(page.locator("#bh-name")).to_have_attribute("readonly", "")
    expect(page.locator("#bh-url")).to_have_value(saved["url"])
    expect(page.locator("#bh-networks")).to_have_value("tailscale, wan")
    page.fill("#bh-priority", "1000")
    dialog.get_by_role("button", name="Save").click()
    expect(error).to_have_attribute("data-field", "priority", timeout=WAIT_MS)
    expect(page.locator("#bh-priority")).to_have_attribute("aria-invalid", "true")
    assert view(swarm, "tail")["priority"] == 70
    page.fill("#bh-priority", "80")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)
    expect(row(page, "tail").locator(".bh-priority")).to_have_text("priority 80", timeout=WAIT_MS)
    assert view(swarm, "tail")["priority"] == 80

    # The controller's own: no destination, always enabled, and its default URL left as a default.
    local = view(swarm, "controller")
    assert local["url_set"] is False
    menu_item(page, "controller", "Edit…").click()
    expect(dialog.locator(".dialog-title")).to_have_text("Edit controller")
    expect(page.locator("#bh-destination")).to_be_hidden()
    expect(page.locator("#bh-enabled")).to_be_hidden()
    expect(page.locator("#bh-url")).to_have_value("")
    expect(page.locator("#bh-url")).to_have_attribute("placeholder", re.compile(re.escape(local["url"])))
    page.fill("#bh-networks", "lan")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden(timeout=WAIT_MS)
    local = view(swarm, "controller")
    assert (local["networks"], local["url_set"], local["kind"]) == (["lan"], False, "local")
    assert unexpected(problems, 400) == []


def test_delete_asks_first(swarm: Fleet, browser: BrowserContext) -> None:
    events: list[dict[str, Any]] = []
    page, problems = open_binhosts(browser, swarm, events)
    expect(row(page, "far")).to_be_visible(timeout=WAIT_MS)
    # The page follows the binhost events (and only the ones that change what it shows).
    wait_for(lambda: page.evaluate("0") == 0 and bool(events), what="the page's /ws/events stream")
    asked = events[0]["url"]
    assert "type=" in asked and "binhost_saved" in asked and "binhost_sync_progress" in asked, asked
    # Added by someone else while the page is open: it shows up by itself.
    doomed = {**FAR, "destination": f"mirror@127.0.0.1:{CLOSED}:/srv/doomed", "networks": ["wan"]}
    admin(swarm, "PUT", "/admin/api/binhosts/doomed", doomed)
    expect(row(page, "doomed")).to_be_visible(timeout=WAIT_MS)
    wait_for(
        lambda: (
            page.evaluate("0") == 0
            and any(
                e.get("type") == "binhost_saved" and e["data"].get("name") == "doomed" for e in events[1:]
            )
        ),
        what="binhost_saved of doomed on the page's stream",
    )

    menu_item(page, "doomed", "Delete…").click()
    dialog = page.locator("dialog.dialog").filter(has_text="Delete doomed?")
    expect(dialog).to_contain_text("clients of wan")
    expect(dialog).to_contain_text(f"127.0.0.1:{CLOSED}:/srv/doomed stay where they are")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert "doomed" in [b["name"] for b in listing(swarm)["binhosts"]]

    menu_item(page, "doomed", "Delete…").click()
    confirm(page, "Delete doomed?", "leaves every binrepos.conf answer", button="Delete")
    expect(row(page, "doomed")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator('.toast-ok[data-action="delete"][data-binhost="doomed"]')).to_be_visible()
    assert "doomed" not in [b["name"] for b in listing(swarm)["binhosts"]]
    assert problems.unexpected() == []


def test_a_push_under_way_shows_its_progress_and_a_stale_mirror_why(
    swarm: Fleet, browser: BrowserContext
) -> None:
    """The controller's real answer with a push under way on far and spare stale, as
    the mirror service reports them: the page draws both."""
    why = "rsync to 127.0.0.1 failed: Connection refused (retry in 40 s)"

    def under_way(route: Route) -> None:
        response = route.fetch()
        answer = response.json()
        release = answer["current"] or "v2026.12.05"
        for b in answer["binhosts"]:
            if b["name"] == "far":
                b["status"] = "syncing"
                b["progress"] = {
                    "release": release,
                    "started_at": "2026-12-05T10:00:00Z",
                    "files_total": 40,
                    "files_done": 10,
                    "bytes_sent": 3_400_000,
                }
            elif b["name"] == "spare":
                b.update(status="stale", error=why, enabled=True)
        route.fulfill(response=response, json=answer)

    page = browser.new_page()
    problems = Problems(page)
    page.route(re.compile(r"/admin/api/binhosts$"), under_way)
    page.goto(f"{swarm.controller.admin_url}/#/binhosts")
    page.fill("#key", swarm.controller.admin_key)
    page.press("#key", "Enter")

    far = row(page, "far")
    expect(far).to_have_attribute("data-status", "syncing", timeout=WAIT_MS)
    bar = far.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "25")
    expect(far.locator(".bh-progress-text")).to_contain_text("10 of 40 files · 3.4 MB sent")
    expect(far.get_by_role("button", name="Sync now")).to_be_disabled()
    expect(far.locator(".bh-error")).to_be_hidden()
    spare = row(page, "spare")
    expect(spare.locator(".pill")).to_have_text("stale")
    expect(spare.locator(".bh-error")).to_have_text(why)
    expect(spare.locator(".bh-progress")).to_be_hidden()
    expect(page.locator("#binhosts-title + .page-sub")).to_contain_text("1 syncing")
    shot(page, "binhosts-progress")
    # Before rsync has listed what it sends there is no fraction to draw, and no "0 of 0".
    words = page.evaluate(
        """async () => {
          const { progressOf } = await import("/app/pages/binhosts.js");
          const push = { release: "v1", started_at: null, files_total: 0, files_done: 0, bytes_sent: 0 };
          return [progressOf(push), progressOf({ ...push, files_total: 4, files_done: 4, bytes_sent: 1500 })];
        }"""
    )
    assert words == [
        {"text": "v1: starting…", "fraction": None},
        {"text": "v1: 4 of 4 files · 1.5 KB sent", "fraction": 1},
    ]
    assert problems.unexpected() == []


def test_the_public_page_shows_the_binhosts(swarm: Fleet, browser: BrowserContext) -> None:
    known = swarm.controller.get("/api/v1/binhosts")
    assert "destination" not in json.dumps(known)  # the public view has none
    page = browser.new_page()
    problems = Problems(page)
    page.goto(swarm.controller.public_url + "/")
    card = page.locator("#binhosts-card")
    expect(card).to_be_visible(timeout=WAIT_MS)
    items = card.locator("li[data-binhost]")
    expect(items).to_have_count(len(known["binhosts"]))
    assert "spare" not in [b["name"] for b in known["binhosts"]]  # disabled: not public
    for b in known["binhosts"]:
        item = card.locator(f'li[data-binhost="{b["name"]}"]')
        expect(item.locator(".binhost-networks")).to_have_text(", ".join(b["networks"]) or "every network")

    def same() -> bool:
        """Each card as the public API has it now (a mirror's state may move on meanwhile)."""
        now = {b["name"]: b for b in swarm.controller.get("/api/v1/binhosts")["binhosts"]}
        shown = card.locator("li[data-binhost]").evaluate_all(
            """items => items.map(li => [li.dataset.binhost, li.querySelector(".pill").textContent,
                                         li.querySelector(".binhost-release").textContent])"""
        )
        return bool(shown == [[n, b["status"], b["release"] or "no release"] for n, b in now.items()])

    wait_for(same, what="the card showing each binhost's status and release as the public API has them")
    card.scroll_into_view_if_needed()
    shot(page, "public-binhosts")
    assert problems.unexpected() == []
