"""The console's live pages in headless Chromium against a real controller
and a real agent, both logging to files: the logs viewer (follow, a line
the test causes, the controller's refusals shown), the events page (an
event the test causes, filters, pause, audit marks), the protocol
viewer (new rows, filters, pause, a decoded pong, a message gone from the
buffer, keyboard), and the live-data module all pages share
(common/live.js): its backoff, a lost stream resumed without a gap, and
a stream closed while the document is hidden.

Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, WebSocket, WebSocketRoute, expect

from support.browser import WAIT_MS, Problems, shot
from support.fleet import Fleet, start_fleet
from support.procs import FAST_HEARTBEAT, Controller, wait_for

pytestmark = pytest.mark.timeout(180)

DRONE = "drone-one"
PROTOCOL_BUFFER = 100  # small, so that a test can push a message out of it


def agent_log(swarm: Fleet) -> Path:
    """The drone's own log file (--log-file), which the logs page follows."""
    return swarm.root / "drone-own.log"


def run(swarm: Fleet, command: str, timeout: float) -> None:
    body = json.dumps({"command": command, "timeout": timeout}).encode()
    status, reply = swarm.controller.admin("POST", f"/admin/api/drones/{DRONE}/exec", body)
    assert status == 200 and reply["exit_code"] == 0, reply


def ping(swarm: Fleet) -> None:
    status, reply = swarm.controller.admin("POST", f"/admin/api/drones/{DRONE}/ping", b"{}")
    assert status == 200, reply


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("console-streams")
    fleet = start_fleet(
        root,
        (DRONE,),
        "--ping-interval",
        "0.5",
        "--log-file",
        str(root / "controller-own.log"),
        "--protocol-buffer",
        str(PROTOCOL_BUFFER),
        agent_args=("--log-file", str(root / "drone-own.log")),
        drone_type="lxc",
        # The protocol page's rows are its heartbeats and pongs, live.
        heartbeat_interval=FAST_HEARTBEAT,
    )
    try:
        yield fleet
    finally:
        fleet.stop()


def open_page(page: Page, controller: Controller, route: str) -> None:
    """Go to a console route; sign in on the way (the login page sends the browser on to it)."""
    page.goto(f"{controller.admin_url}/#/{route}")
    expect(page).to_have_url(re.compile(r"/login#/"))
    page.fill("#key", controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(rf"/#/{re.escape(route)}$"), timeout=WAIT_MS)


def refused(problems: Problems, *statuses: int) -> list[str]:
    """The page's problems, less the failed loads a test caused on purpose (statuses)."""
    return [p for p in problems.unexpected() if not any(f"status of {s}" in p for s in statuses)]


# -- logs ---------------------------------------------------------------------------------


def test_the_logs_page_follows_a_drone_log_and_shows_refusals(swarm: Fleet, browser: BrowserContext) -> None:
    page = browser.new_page()
    problems = Problems(page)
    open_page(page, swarm.controller, f"logs?drone={DRONE}&source=agent")
    view = page.locator("#logs-view")
    expect(view).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator(".log-notice").first).to_contain_text(f"agent: {agent_log(swarm)}")
    expect(page.locator(".logs-title")).to_have_text(f"{DRONE} · agent")

    # A command run now is logged by the agent (its timeout marks this one), and shows while followed.
    run(swarm, "true", 9.375)
    expect(view).to_contain_text("timeout 9.375", timeout=WAIT_MS)
    ran = page.locator('.log-line:has-text("timeout 9.375") ~ .log-line:has-text("(EXEC) ended")')
    expect(ran.first).to_be_visible(timeout=WAIT_MS)
    expect(view).to_have_attribute("data-follow", "1")
    assert view.evaluate("v => v.scrollHeight - v.scrollTop - v.clientHeight") <= 8

    # Scrolled up, it stops following and counts what arrives; the count's button follows again.
    # (A fresh agent has logged a few lines only: more, as another writer of the file would.)
    with agent_log(swarm).open("a") as log:
        log.writelines(f"2025-01-01 00:00:00,000 INFO    filler: line {i}\n" for i in range(120))
    expect(view).to_contain_text("filler: line 119", timeout=WAIT_MS)
    assert view.evaluate("v => v.scrollHeight > 1.5 * v.clientHeight"), "too few lines to scroll"
    view.evaluate("v => { v.scrollTop = 0; }")
    expect(page.locator(".logs-follow")).to_have_attribute("aria-pressed", "false")
    run(swarm, "true", 9.5)
    expect(view).to_contain_text("timeout 9.5", timeout=WAIT_MS)
    newer = page.locator(".logs-newer")
    expect(newer).to_contain_text("new line", timeout=WAIT_MS)
    assert view.evaluate("v => v.scrollTop") == 0  # the reader kept their place
    shot(page, "logs")
    newer.click()
    expect(page.locator(".logs-follow")).to_have_attribute("aria-pressed", "true")
    expect(newer).to_be_hidden()
    wait_for(
        lambda: view.evaluate("v => v.scrollHeight - v.scrollTop - v.clientHeight") <= 8, what="at the end"
    )

    # An unknown source: the controller's 404 message, before any websocket.
    page.evaluate(f"location.hash = '#/logs?drone={DRONE}&source=build/j-000000000000'")
    problem = page.locator(".logs-page .banner-error")
    expect(problem).to_contain_text("no log of build j-000000000000", timeout=WAIT_MS)
    expect(view).to_have_attribute("data-state", "error")
    # A path is refused (400) with the controller's reason.
    page.fill("#logs-source", "../../etc/passwd")
    page.get_by_role("button", name="Tail").click()
    expect(problem).to_contain_text("not a log source name", timeout=WAIT_MS)

    # The controller's own log, chosen in the form.
    page.select_option("#logs-target", "control-plane")
    expect(page.locator("#logs-source")).to_be_disabled()
    page.get_by_role("button", name="Tail").click()
    expect(page).to_have_url(re.compile(r"/#/logs$"))
    expect(view).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(problem).to_be_hidden()
    expect(view).to_contain_text("swarm.controller", timeout=WAIT_MS)
    assert int(view.get_attribute("data-lines") or 0) > 0

    # Another page stops the stream (no socket left open in the background).
    page.evaluate("location.hash = '#/events'")
    expect(view).to_have_attribute("data-state", "ended")
    assert refused(problems, 400, 404) == []


# -- events -------------------------------------------------------------------------------


def test_the_events_page_shows_live_events_filters_and_pauses(swarm: Fleet, browser: BrowserContext) -> None:
    page = browser.new_page()
    problems = Problems(page)
    open_page(page, swarm.controller, "events")
    live = page.locator(".ev-page .live")
    expect(live).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    who = page.locator("#who").inner_text()
    # Our own login is an audit event, marked with who.
    login = page.locator('tr.ev-row[data-type="admin_login"]').first
    expect(login).to_have_attribute("data-audit", "1")
    expect(login.locator(".ev-who")).to_have_text(who)
    expect(page.locator('tr.ev-row[data-type="drone_connected"]').first).to_contain_text(DRONE)

    # A ping now: its event shows on top, live, marked as an admin's action.
    pinged = page.locator('tr.ev-row[data-type="drone_pinged"]')
    before = pinged.count()
    ping(swarm)
    expect(pinged).to_have_count(before + 1, timeout=WAIT_MS)
    newest = page.locator("tr.ev-row").first
    expect(newest).to_have_attribute("data-type", "drone_pinged")
    expect(newest.locator(".ev-who")).to_have_text(who)
    expect(newest).to_contain_text(DRONE)
    newest.click()
    expect(page.locator("#events-detail")).to_be_visible()
    shot(page, "events")

    # Filtered by type on the controller: only pings are left.
    page.fill("#events-type", "drone_pinged")
    page.press("#events-type", "Enter")
    expect(page.locator('tr.ev-row:not([data-type="drone_pinged"])')).to_have_count(0, timeout=WAIT_MS)
    expect(pinged).to_have_count(before + 1)
    # The text search filters what is shown; nothing matches nonsense.
    page.fill("#events-search", "no such words anywhere")
    expect(page.locator("tr.ev-row")).to_have_count(0)
    expect(page.locator(".ev-list .empty")).to_be_visible()
    page.fill("#events-search", "answered a ping")
    expect(pinged).to_have_count(before + 1)

    # A row opens its data.
    pinged.first.click()
    detail = page.locator("#events-detail")
    expect(detail).to_be_visible()
    expect(detail.locator(".ev-json")).to_contain_text(f'"by": "{who}"')

    # Paused: a new event is held (and counted), shown on resume.
    page.get_by_role("button", name="Pause").click()
    ping(swarm)
    held = page.locator(".ev-held")
    expect(held).to_contain_text("1 new event while paused", timeout=WAIT_MS)
    expect(pinged).to_have_count(before + 1)
    held.click()
    expect(pinged).to_have_count(before + 2)
    expect(page.get_by_role("button", name="Pause")).to_have_attribute("aria-pressed", "false")
    assert problems.unexpected() == []


# -- protocol -----------------------------------------------------------------------------


def top_seq(page: Page) -> int:
    return int(page.locator("tr.pr-row").first.get_attribute("data-seq") or 0)


def test_the_protocol_page_streams_filters_pauses_and_decodes(swarm: Fleet, browser: BrowserContext) -> None:
    page = browser.new_page()
    problems = Problems(page)
    open_page(page, swarm.controller, "protocol")
    expect(page.locator(".pr-page .live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    rows = page.locator("tr.pr-row")
    beats = page.locator(f'tr.pr-row[data-type="heartbeat"][data-drone="{DRONE}"]')
    expect(beats.first).to_be_visible(timeout=WAIT_MS)
    expect(beats.first).to_have_attribute("data-direction", "in")
    # New rows keep coming: the drone's heartbeats, live.
    first = top_seq(page)
    wait_for(lambda: top_seq(page) > first, what="a newer protocol row")
    expect(page.locator(".pr-rate")).to_contain_text("msg/s", timeout=WAIT_MS)

    # Only pongs, filtered by the controller; each with its round trip.
    page.select_option("#protocol-type", "pong")
    pongs = page.locator('tr.pr-row[data-type="pong"]')
    expect(pongs.first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator('tr.pr-row:not([data-type="pong"])')).to_have_count(0)
    expect(pongs.first.locator(".pr-latency")).to_have_text(re.compile(r"^\d+\.\d+ ms$"))

    # A click decodes it: the pong itself, and the latency the row showed.
    # (One row, by its seq: `pongs.first` is the newest at each use, and new pongs keep coming.)
    seq = pongs.first.get_attribute("data-seq")
    pong = page.locator(f'tr.pr-row[data-seq="{seq}"]')
    shown = pong.locator(".pr-latency").inner_text()
    pong.click()
    detail = page.locator("#protocol-detail")
    expect(detail).to_have_attribute("data-state", "loaded", timeout=WAIT_MS)
    expect(detail).to_have_attribute("data-seq", str(seq))
    expect(detail.locator('dd[data-field="round trip"]')).to_have_text(shown)
    expect(detail.locator(".pr-json")).to_contain_text('"pong"')
    expect(detail.locator('dd[data-field="drone"]')).to_contain_text(DRONE)

    # The keyboard moves between rows (down: older) and Enter opens one.
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".pr-page")).to_have_attribute("data-paused", "1")
    rows.first.focus()
    second = rows.nth(1).get_attribute("data-seq")
    page.keyboard.press("ArrowDown")
    expect(rows.nth(1)).to_be_focused()
    page.keyboard.press("Enter")
    expect(detail).to_have_attribute("data-seq", str(second))
    expect(detail).to_have_attribute("data-state", "loaded", timeout=WAIT_MS)
    page.keyboard.press("ArrowUp")
    expect(rows.first).to_be_focused()

    # Paused: nothing is added, what arrives is counted.
    paused_top, paused_rows = top_seq(page), rows.count()
    oldest = rows.last.get_attribute("data-seq")
    for _ in range(PROTOCOL_BUFFER // 2 + 5):  # a ping and its pong each: the buffer turns over
        ping(swarm)
    expect(page.locator(".pr-page")).to_have_attribute(
        "data-held", re.compile(r"^[1-9]\d+$"), timeout=WAIT_MS
    )
    assert top_seq(page) == paused_top and rows.count() == paused_rows
    expect(page.get_by_role("button", name=re.compile(r"^Resume · \d+ new$"))).to_be_visible()

    # The oldest row's message has left the controller's buffer: it says so.
    rows.last.click()
    expect(detail).to_have_attribute("data-seq", str(oldest))
    expect(detail).to_have_attribute("data-state", "gone", timeout=WAIT_MS)
    expect(detail).to_contain_text("left the controller's buffer")

    # Resumed: a gap row says what was not shown, and new rows come on top.
    page.get_by_role("button", name=re.compile(r"^Resume")).click()
    expect(page.locator('tr[data-gap="paused"]')).to_contain_text("arrived while paused", timeout=WAIT_MS)
    wait_for(lambda: top_seq(page) > paused_top, what="rows after the pause")
    pongs.first.click()
    expect(detail).to_have_attribute("data-state", "loaded", timeout=WAIT_MS)

    # All types again, and the screenshot with a decoded pong.
    page.select_option("#protocol-type", "")
    expect(beats.first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator('tr.pr-row[data-type="ping"]').first).to_be_visible(timeout=WAIT_MS)
    shot(page, "protocol")
    assert refused(problems, 404) == []


# -- the live-data module -----------------------------------------------------------------

# The document as a browser tab in the background (true) or in front (false) reports itself.
HIDE = """(hidden) => {
  const state = () => (hidden ? "hidden" : "visible");
  Object.defineProperty(document, "visibilityState", { configurable: true, get: state });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_live_streams_back_off_resume_after_a_loss_and_rest_while_hidden(
    swarm: Fleet, browser: BrowserContext
) -> None:
    page = browser.new_page()
    problems = Problems(page)
    relayed: list[WebSocketRoute] = []  # /ws/events connections, relayed to the controller

    def relay(route: WebSocketRoute) -> None:
        route.connect_to_server()
        relayed.append(route)

    page.route_web_socket(re.compile(r"/ws/events"), relay)
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    open_page(page, swarm.controller, "events")
    live = page.locator(".ev-page .live")
    expect(live).to_have_attribute("data-state", "live", timeout=WAIT_MS)

    # Backoff with full jitter: a random wait up to base * 2^attempt, never above the cap.
    waits = page.evaluate(
        """async () => {
          const { backoff } = await import("/common/live.js");
          const limits = { base: 1000, cap: 30000 };
          const least = () => 0;
          const most = () => 0.999999;
          return [0, 1, 2, 5, 40].flatMap((n) => [backoff(n, limits, least), backoff(n, limits, most)]);
        }"""
    )
    assert waits == [0, 1000, 0, 2000, 0, 4000, 0, 30000, 0, 30000]

    # The controller's side of the stream goes: the page reconnects by itself,
    # resuming after the newest event it has (since=), so an event of the gap
    # shows once.
    pinged = page.locator('tr.ev-row[data-type="drone_pinged"]')
    before = pinged.count()
    newest = int(page.locator("tr.ev-row").first.get_attribute("data-id") or 0)
    relayed[-1].close(code=4000, reason="cut by the test")
    ping(swarm)
    # (Playwright hands over a routed connection while it talks to the browser: the evaluate lets it.)
    wait_for(lambda: page.evaluate("0") == 0 and len(relayed) == 2, what="a second /ws/events connection")
    since = re.search(r"[?&]since=(\d+)", relayed[1].url)
    assert since and int(since.group(1)) >= newest, relayed[1].url
    expect(live).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(pinged).to_have_count(before + 1, timeout=WAIT_MS)

    # Hidden: the stream closes; an event meanwhile is not shown until the
    # page is visible again, then it is, once.
    streams = [ws for ws in sockets if "/ws/events" in ws.url]
    page.evaluate(HIDE, True)
    expect(live).to_have_attribute("data-state", "hidden")
    wait_for(
        lambda: page.evaluate("0") == 0 and all(ws.is_closed() for ws in streams),
        what="the events stream closed while hidden",
    )
    pings = len(swarm.controller.events(type="drone_pinged"))
    ping(swarm)
    wait_for(lambda: len(swarm.controller.events(type="drone_pinged")) > pings, what="the ping's event")
    expect(pinged).to_have_count(before + 1)
    page.evaluate(HIDE, False)
    expect(live).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(pinged).to_have_count(before + 2, timeout=WAIT_MS)
    assert len(relayed) == 3
    assert problems.unexpected() == []
