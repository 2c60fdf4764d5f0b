"""The public status page in headless Chromium against a real controller
with builds on and a real agent that has made a package (written with
Portage's gpkg code, support/gpkg_build.py: what the page shows of a
session is the point, not the build):
status figures, the drone with its cores and state, the session's
progress, recent events (live), the activity waveform and its scrubber,
releases; no admin control and no request to the admin tier. The public
tier serves the page's files and nothing else of the console.

Screenshots at laptop and phone widths go to test-artifacts/console/.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from support.browser import ARTIFACTS, WAIT_MS, Problems, get, shot
from support.fleet import Fleet, builders, start_fleet
from support.gpkgs import WRITE_COMMAND
from support.procs import wait_for

pytestmark = pytest.mark.timeout(240)

DRONE = "builder-0"
PACKAGE = "swarm-test/leaf-data"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    s = start_fleet(tmp_path_factory.mktemp("public-page"), builders(1), portage=True, command=WRITE_COMMAND)
    try:
        session_id = s.queue(PACKAGE)["session"]["id"]
        wait_for(
            lambda: s.controller.get("/api/v1/status")["session"]["state"] == "complete",
            timeout=120,
            what=f"session {session_id} built {PACKAGE}",
        )
        yield s
    finally:
        s.stop()


@dataclass
class Visit:
    """A page with everything it asked for and every problem it had."""

    page: Page
    problems: Problems
    requests: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        return self.problems.unexpected()


def visit(context: BrowserContext, swarm: Fleet) -> Visit:
    page = context.new_page()
    v = Visit(page, Problems(page))
    page.on("request", lambda r: v.requests.append(r.url))

    def answered(response: Response) -> None:
        if response.status == 404:
            v.not_found.append(urllib.parse.urlsplit(response.url).path)

    page.on("response", answered)
    page.goto(swarm.controller.public_url + "/")
    return v


def assert_public_only(v: Visit, swarm: Fleet) -> None:
    public = urllib.parse.urlsplit(swarm.controller.public_url).netloc
    admin_port = urllib.parse.urlsplit(swarm.controller.admin_url).port
    assert v.requests, "the page made no request at all"
    to_admin = [u for u in v.requests if urllib.parse.urlsplit(u).port == admin_port]
    assert to_admin == [], to_admin
    elsewhere = [u for u in v.requests if urllib.parse.urlsplit(u).netloc != public]
    assert elsewhere == [], elsewhere
    assert not any("/admin/" in u or "/ws/" in u for u in v.requests)
    # /releases.json too: 200 with an empty list before the first cut, never a 404.
    assert v.not_found == [], v.not_found
    assert v.errors() == []


def canvas_painted(page: Page) -> int:
    """How many pixels of the waveform's canvas are not transparent."""
    return int(
        page.evaluate(
            """() => {
              const c = document.querySelector('.waveform canvas');
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
              return n;
            }"""
        )
    )


# -- what the public tier serves ------------------------------------------------------------


def test_the_public_tier_serves_the_page_and_nothing_else_of_the_console(swarm: Fleet) -> None:
    base = swarm.controller.public_url
    for path, kind in (
        ("/", "text/html"),
        ("/public/public.js", "text/javascript"),
        ("/public/public.css", "text/css"),
        ("/public/icon.svg", "image/svg+xml"),
        ("/common/waveform.js", "text/javascript"),
        ("/common/waveform.css", "text/css"),
    ):
        status, headers, body = get(base + path)
        assert status == 200 and headers["Content-Type"].startswith(kind), (path, status, headers)
        assert headers["Cache-Control"] == "no-cache" and headers["X-Content-Type-Options"] == "nosniff"
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "style-src 'self'" in policy, policy
        assert "'unsafe-inline'" not in policy, policy
    status, _, body = get(base + "/")
    assert b"<script>" not in body and b"style=" not in body
    # The admin console, its libraries and the login page are the admin tier's alone.
    for path in (
        "/app/main.js",
        "/app/index.html",
        "/app/console.css",
        "/vendor/xterm.mjs",
        "/login",
        "/login/login.js",
        "/public/../app/main.js",
        "/public/%2e%2e/app/main.js",
        "/common/..%2fapp%2fmain.js",
        "/public/nope.js",
        "/public/public.py",
    ):
        status, headers, body = get(base + path)
        assert status == 404 and headers["Content-Type"].startswith("application/json"), (path, status)
    # The admin tier serves the shared waveform too, to an admin only (the topology page uses it).
    admin = swarm.controller.admin_url
    status, _, _ = get(admin + "/common/waveform.js")
    assert status == 401
    status, headers, _ = get(admin + "/common/waveform.js", {"X-Admin-Key": swarm.controller.admin_key})
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")


# -- the page ------------------------------------------------------------------------------


def test_status_page_shows_the_swarm_live(swarm: Fleet, browser: BrowserContext) -> None:
    ctl = swarm.controller
    node = ctl.node(DRONE)
    assert node is not None
    v = visit(browser, swarm)
    page = v.page

    # Status figures from /api/v1/status.
    status = ctl.get("/api/v1/status")
    expect(page.locator("#headline-text")).to_have_text("The drone is online", timeout=WAIT_MS)
    expect(page.locator("#stat-drones")).to_have_text("1 / 1")
    expect(page.locator("#stat-cores")).to_have_text(str(status["cores_online"]))
    expect(page.locator("#stat-building")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#controller")).to_contain_text(f"Controller {status['controller']['version']}")
    expect(page.locator("#stat-uptime")).to_have_text(re.compile(r"^\d+ (s|min)$"))

    # The drone, its cores and its state.
    drone = page.locator(f'li.drone[data-drone="{DRONE}"]')
    expect(drone).to_have_attribute("data-state", "online")
    expect(drone).to_have_attribute("data-cores", str(node["cores"]))
    expect(drone).to_contain_text(f"{node['cores']} core")
    expect(drone.locator(".pill-online")).to_have_text("online")

    # The session built its one package.
    build = page.locator("#build")
    expect(build).to_have_attribute("data-state", "complete")
    expect(build).to_have_attribute("data-done", "1")
    expect(build).to_have_attribute("data-total", "1")
    expect(build).to_contain_text("100%")
    expect(page.locator("#build-state")).to_have_text("complete")

    # Recent events, newest first.
    events = page.locator("#events li.event")
    expect(events.first).to_be_visible()
    expect(page.locator('#events li[data-type="drone_connected"]')).to_contain_text(DRONE)
    expect(page.locator('#events li[data-type="job_done"]')).to_have_count(1)
    ids = [int(x) for x in events.evaluate_all("items => items.map(i => i.dataset.id)")]
    assert ids == sorted(ids, reverse=True) and len(ids) >= 3

    # Releases: honest about having none (none was cut: /releases.json lists none).
    expect(page.locator("#releases")).to_have_attribute("data-state", "none")
    expect(page.locator("#releases")).to_contain_text("No release has been published yet.")

    # The waveform drew the controller's activity.
    wave = page.locator(".waveform")
    expect(wave).to_have_attribute("data-state", "ready")
    expect(wave).to_have_attribute("data-buckets", "96")
    total = int(wave.get_attribute("data-total") or 0)
    assert total >= len(ids)
    assert int(wave.get_attribute("data-draws") or 0) >= 1
    assert canvas_painted(page) > 1000
    expect(page.locator("#activity-total")).to_have_text(re.compile(r"^\d+ events in 24 h$"))
    shot(page, "public")
    (ARTIFACTS / "public-full.png").write_bytes(page.screenshot(full_page=True))

    # Live: an admin drains the drone; the page shows it without a reload.
    code, body = ctl.admin("POST", f"/admin/api/drones/{DRONE}/drain")
    assert code == 200, body
    try:
        expect(drone).to_have_attribute("data-state", "draining", timeout=WAIT_MS)
        expect(drone.locator(".pill-draining")).to_be_visible()
        expect(page.locator('#events li[data-type="drone_draining"]')).to_have_count(1, timeout=WAIT_MS)
        expect(events.first).to_have_attribute("data-type", "drone_draining")
        # New events bring the waveform up to date too, not a minute later.
        wait_for(
            lambda: int(wave.get_attribute("data-total") or 0) > total, what="the waveform counted the drain"
        )
    finally:
        code, body = ctl.admin("POST", f"/admin/api/drones/{DRONE}/undrain")
        assert code == 200, body
    expect(drone).to_have_attribute("data-state", "online", timeout=WAIT_MS)

    # No admin control anywhere, no link to the admin tier.
    assert page.locator("button").count() == 1  # "Back to live" of the scrubber (hidden until used)
    for word in ("Terminal", "Log out", "Restart", "Reboot", "Drain", "Ground", "Ping", "Sign in"):
        expect(page.get_by_role("button", name=word)).to_have_count(0)
        expect(page.get_by_role("link", name=word)).to_have_count(0)
    html = page.content()
    assert ctl.admin_url not in html and "/admin/" not in html
    assert_public_only(v, swarm)


def test_scrubbing_the_waveform_shows_that_moments_events(swarm: Fleet, browser: BrowserContext) -> None:
    v = visit(browser, swarm)
    page = v.page
    wave = page.locator(".waveform")
    expect(wave).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    moment = page.locator("#moment")
    expect(moment).to_be_hidden()
    box = page.locator(".waveform canvas").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2

    # Hovering tells a bucket's time and count.
    page.mouse.move(box["x"] + box["width"] - 3, y)
    tip = page.locator(".waveform-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(re.compile(r"\d\d:\d\d\u2013\d\d:\d\d · \d+ events?"))

    # Drag from the middle (12 hours ago: nothing happened) to the right edge (now).
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    expect(moment).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    expect(page.locator("#moment-events")).to_contain_text("No public event in this moment.")
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
    page.mouse.move(box["x"] + box["width"] - 2, y, steps=5)
    page.mouse.up()
    expect(wave).to_have_attribute("data-index", "95")
    expect(moment.locator('li[data-type="job_done"]')).to_have_count(1, timeout=WAIT_MS)
    expect(moment.locator('li[data-type="drone_connected"]')).to_contain_text(DRONE)
    expect(page.locator("#moment-title")).to_contain_text(re.compile(r"\u2013now · \d+ events"))
    # What it shows is what the API says for that moment.
    start = moment.get_attribute("data-start")
    assert start is not None
    expected = swarm.controller.get(f"/api/v1/events?since={urllib.parse.quote(start)}&limit=200")["events"]
    shown = int(moment.get_attribute("data-count") or 0)
    assert len(expected) >= shown >= 3
    scrub = wave.get_attribute("data-scrub")
    assert scrub and scrub >= start
    shot(page, "public-scrubbed")

    # The keyboard: the waveform is a slider.
    wave.focus()
    page.keyboard.press("ArrowLeft")
    expect(wave).to_have_attribute("data-index", "94")
    expect(moment).to_have_attribute("data-state", "ready")
    expect(page.locator("#moment-events")).to_contain_text("No public event in this moment.")
    expect(wave).to_have_attribute("aria-valuenow", "94")
    page.keyboard.press("Home")
    expect(wave).to_have_attribute("data-index", "0")
    page.keyboard.press("End")
    expect(wave).to_have_attribute("data-index", "95")
    expect(moment.locator('li[data-type="job_done"]')).to_have_count(1, timeout=WAIT_MS)
    page.keyboard.press("Escape")
    expect(moment).to_be_hidden()
    expect(wave).to_have_attribute("data-scrub", "")

    # "Back to live" parks it too.
    page.keyboard.press("ArrowLeft")
    expect(moment).to_be_visible()
    page.get_by_role("button", name="Back to live").click()
    expect(moment).to_be_hidden()
    assert_public_only(v, swarm)


def test_status_page_on_a_phone(swarm: Fleet, chromium: Browser) -> None:
    context = chromium.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True, is_mobile=True
    )
    try:
        v = visit(context, swarm)
        page = v.page
        wave = page.locator(".waveform")
        expect(page.locator(f'li.drone[data-drone="{DRONE}"]')).to_have_attribute(
            "data-state", "online", timeout=WAIT_MS
        )
        expect(wave).to_have_attribute("data-state", "ready")
        # HiDPI: the canvas has device pixels, twice its CSS size.
        size = page.evaluate(
            "() => { const c = document.querySelector('.waveform canvas');"
            " return [c.width, c.clientWidth, c.height, c.clientHeight]; }"
        )
        assert size[0] == 2 * size[1] and size[2] == 2 * size[3], size
        # Nothing is wider than the phone.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        shot(page, "public-phone")
        # A finger on the waveform's right edge shows the latest moment.
        wave.scroll_into_view_if_needed()
        box = page.locator(".waveform canvas").bounding_box()
        assert box is not None
        page.touchscreen.tap(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
        expect(page.locator("#moment li[data-type='job_done']")).to_have_count(1, timeout=WAIT_MS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "public-phone-full.png").write_bytes(page.screenshot(full_page=True))
        assert_public_only(v, swarm)
    finally:
        context.close()


def test_the_waveform_follows_its_container(swarm: Fleet, browser: BrowserContext) -> None:
    v = visit(browser, swarm)
    page = v.page
    wave = page.locator(".waveform")
    expect(wave).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    before = page.evaluate("() => document.querySelector('.waveform canvas').width")
    draws = int(wave.get_attribute("data-draws") or 0)
    page.set_viewport_size({"width": 820, "height": 800})
    wait_for(
        lambda: page.evaluate("() => document.querySelector('.waveform canvas').width") < before,
        what="the canvas narrowed with the window",
    )
    assert int(wave.get_attribute("data-draws") or 0) > draws  # and was painted again at once
    assert canvas_painted(page) > 500
    assert_public_only(v, swarm)
