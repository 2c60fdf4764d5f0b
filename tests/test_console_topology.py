"""The console's topology page in headless Chromium against a real controller
and two real agents, one on the LAN and one on Tailscale: each drone in its
network's group, packets drawn for real heartbeats and pings (the page's
record of each packet names the protocol seq that caused it, which the
controller's protocol log confirms), the legend, the drone panel by mouse
and keyboard, the activity waveform's scrubber, a drone going offline, and
the live streams closed once another page is shown.

Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, WebSocket, expect

from support.browser import WAIT_MS, Problems, log_in, shot
from support.fleet import Fleet, start_fleet
from support.procs import FAST_HEARTBEAT, ControllerApi, wait_for

pytestmark = pytest.mark.timeout(180)

LAN = "drone-lan"
TAILSCALE = "drone-tail"


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("topology")
    # Pings only when asked (and one at connect): a ping packet after ours is ours.
    fleet = start_fleet(root, (), "--ping-interval", "3600")
    try:
        # The page draws a packet per heartbeat: its tests wait for beats.
        fleet.add_agent(LAN, drone_type="lxc", heartbeat_interval=FAST_HEARTBEAT)
        fleet.add_agent(
            TAILSCALE, "--network", "tailscale", drone_type="qemu", heartbeat_interval=FAST_HEARTBEAT
        )
        for name in fleet.agents:
            wait_for(functools.partial(pinged, fleet.controller, name), what=f"{name} online and pinged")
        yield fleet
    finally:
        fleet.stop()


def pinged(controller: ControllerApi, name: str) -> object:
    return (node := controller.online(name)) and node["ping_latency_ms"]


def drone(page: Page, name: str) -> Locator:
    """The page's record of one drone (a visually hidden list item)."""
    return page.locator(f'.topo-list li[data-drone="{name}"]')


def protocol(swarm: Fleet, path: str) -> Any:
    status, body = swarm.controller.admin("GET", path)
    assert status == 200, body
    return body


def newer_seq(item: Locator, attribute: str, than: int) -> int:
    """Wait until the page records a packet with a protocol seq above ``than``; that seq."""
    expect(item).to_have_attribute(attribute, re.compile(r"^\d+$"), timeout=WAIT_MS)
    return int(
        wait_for(
            lambda: (v := item.get_attribute(attribute)) is not None and int(v) > than and v,
            what=f"{attribute} above {than}",
            timeout=30,  # the page's live stream lags behind on a loaded machine (failed at 15 s)
        )
    )


def open_topology(swarm: Fleet, browser: BrowserContext) -> tuple[Page, Problems]:
    page = browser.new_page()
    problems = Problems(page)
    log_in(page, swarm.controller)  # the console opens on the topology
    expect(page.locator("h1#topology-title")).to_be_visible()
    return page, problems


def test_topology_shows_the_fleet_by_network_with_real_packets(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_topology(swarm, browser)
    stage = page.locator(".topo-stage")

    # Each drone in its network's group, online, placed on the canvas.
    expect(page.locator(f'[data-group="lan"] li[data-drone="{LAN}"]')).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator(f'[data-group="tailscale"] li[data-drone="{TAILSCALE}"]')).to_have_count(1)
    for name, network in ((LAN, "lan"), (TAILSCALE, "tailscale")):
        item = drone(page, name)
        expect(item).to_have_attribute("data-state", "online")
        expect(item).to_have_attribute("data-network", network)
        expect(item).to_have_attribute("data-x", re.compile(r"^\d+$"))
    # LAN left of the controller, Tailscale right of it.
    assert int(drone(page, LAN).get_attribute("data-x") or 0) < int(
        drone(page, TAILSCALE).get_attribute("data-x") or 0
    )
    expect(stage).to_have_attribute("data-layout", "cards")
    expect(page.locator(".page-sub").first).to_contain_text("2 drones on 2 networks · 2 online")

    # The legend names every packet colour and every state.
    legend = page.locator(".topo-legend")
    for label in ("Heartbeat", "Ping", "Pong", "Work assignment", "Build progress", "Completion", "Failure"):
        expect(legend).to_contain_text(label)
    for state in ("Online", "Suspect", "Unhealthy", "Grounded", "Draining", "Offline"):
        expect(legend).to_contain_text(state)

    # A heartbeat packet for the Tailscale drone, caused by a heartbeat the
    # controller received after this point.
    tail = drone(page, TAILSCALE)
    before = protocol(swarm, f"/admin/api/protocol?drone={TAILSCALE}&type=heartbeat&limit=1")
    seen = before["entries"][-1]["seq"] if before["entries"] else 0
    seq = newer_seq(tail, "data-last-heartbeat-seq", seen)
    entry = protocol(swarm, f"/admin/api/protocol/{seq}")
    assert (entry["drone"], entry["type"], entry["direction"]) == (TAILSCALE, "heartbeat", "in"), entry
    assert int(tail.get_attribute("data-packets") or 0) > 0
    expect(stage).not_to_have_attribute("data-packets-drawn", "0")  # written twice a second

    # A ping packet out to the LAN drone after an admin's ping; the pong back.
    lan = drone(page, LAN)
    mark = protocol(swarm, "/admin/api/protocol?limit=1")["last_seq"]
    status, pinged = swarm.controller.admin("POST", f"/admin/api/drones/{LAN}/ping", b"{}")
    assert status == 200, pinged
    ping_seq = newer_seq(lan, "data-last-ping-seq", mark)
    entry = protocol(swarm, f"/admin/api/protocol/{ping_seq}")
    assert (entry["drone"], entry["type"], entry["direction"]) == (LAN, "ping", "out"), entry
    assert int(entry["message"]["ping"]["seq"]) == pinged["seq"]
    pong_seq = newer_seq(lan, "data-last-pong-seq", ping_seq)
    assert protocol(swarm, f"/admin/api/protocol/{pong_seq}")["type"] == "pong"
    shot(page, "topology")

    # A click on the drone opens its panel, with its terminal, logs and the drones page.
    x, y = (int(lan.get_attribute(a) or 0) for a in ("data-x", "data-y"))
    page.locator(".topo-fx").click(position={"x": x, "y": y})
    panel = page.locator(".topo-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("h2")).to_have_text(LAN)
    expect(panel).to_contain_text("online")
    expect(panel).to_contain_text("LAN")
    expect(panel.get_by_role("link", name="Terminal")).to_have_attribute("href", f"#/terminal?drone={LAN}")
    expect(panel.get_by_role("link", name="Logs")).to_have_attribute("href", f"#/logs?drone={LAN}")
    expect(panel.get_by_role("link", name="Drones page")).to_have_attribute("href", "#/drones")
    expect(panel).to_contain_text("ms")  # its ping
    # The stage made room for it and laid the drones out again.
    expect(lan).not_to_have_attribute("data-x", str(x))
    shot(page, "topology-panel")
    panel.get_by_role("button", name="Close the details").click()
    expect(panel).to_be_hidden()

    # By keyboard: one tab stop for the drones, arrows move between them, Enter opens.
    first = page.locator(".topo-list button").first
    first.focus()
    expect(stage).to_have_class(re.compile(r"\bkeyboard\b"))
    page.keyboard.press("ArrowDown")
    focused = page.locator(".topo-list button:focus")
    expect(focused).to_contain_text(TAILSCALE)
    assert first.get_attribute("tabindex") == "-1" and focused.get_attribute("tabindex") == "0"
    page.keyboard.press("Enter")
    expect(panel.locator("h2")).to_have_text(TAILSCALE)
    expect(panel).to_contain_text("Tailscale")
    panel.focus()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(page.locator(".topo-list button:focus")).to_contain_text(TAILSCALE)
    assert problems.unexpected() == []


def test_activity_scrubber_lists_the_events_of_a_moment(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_topology(swarm, browser)
    wave = page.locator(".topo-wave .waveform")
    expect(wave).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    assert int(wave.get_attribute("data-total") or 0) > 0
    events = page.locator(".topo-events")
    # Parked at "now": the newest events, live.
    expect(events).to_contain_text("drone_connected", timeout=WAIT_MS)

    # Drag the scrubber to the far left: a quiet moment a day ago.
    box = wave.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 3, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    expect(events).not_to_have_attribute("data-moment", "")
    expect(events).to_contain_text("No events in this moment", timeout=WAIT_MS)

    # Then to the newest bucket (keyboard: End): the drones' connections are in it,
    # as GET /admin/api/events?since= answers for that moment.
    wave.focus()
    page.keyboard.press("End")
    expect(events).to_contain_text("drone_connected", timeout=WAIT_MS)
    moment = events.get_attribute("data-moment") or ""
    assert moment.endswith("Z")
    shown = [
        int(i or 0)
        for i in events.locator("li[data-event-id]").evaluate_all(
            "(items) => items.map((li) => li.dataset.eventId)"
        )
    ]
    status, body = swarm.controller.admin("GET", f"/admin/api/events?since={moment}&limit=50")
    assert status == 200
    assert len(shown) >= 2 and shown == [e["id"] for e in body["events"]][: len(shown)]
    shot(page, "topology-activity")
    page.keyboard.press("Escape")  # parked again: recent events
    expect(events).to_have_attribute("data-moment", "")
    assert problems.unexpected() == []


def test_a_drone_going_offline_and_the_streams_closing(swarm: Fleet, browser: BrowserContext) -> None:
    page = browser.new_page()
    problems = Problems(page)
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    log_in(page, swarm.controller)
    lan = drone(page, LAN)
    expect(lan).to_have_attribute("data-state", "online", timeout=WAIT_MS)
    expect(page.locator(".topo-stage")).to_have_attribute(
        "data-in-flight", re.compile(r"^[1-9]"), timeout=WAIT_MS
    )

    # The agent goes: its state changes on the page, and the event that says so is listed.
    swarm.agents[LAN].kill()
    expect(lan).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
    gone = wait_for(
        lambda: [e for e in swarm.controller.events(type="drone_disconnected") if e["drone_name"] == LAN],
        what="the drone_disconnected event",
    )
    expect(page.locator(f'.topo-events li[data-event-id="{gone[-1]["id"]}"]')).to_contain_text(LAN)
    shot(page, "topology-offline")

    # Another page: the topology's streams close and nothing is drawn any more.
    streams = [ws for ws in sockets if re.search(r"/ws/(protocol|events)", ws.url)]
    assert len(streams) == 2, [ws.url for ws in sockets]
    page.click('nav a[data-page="drones"]')
    # (Playwright learns of a close while it talks to the browser: the evaluate lets it.)
    wait_for(
        lambda: page.evaluate("0") == 0 and all(ws.is_closed() for ws in streams),
        what="the topology's websockets closed",
    )
    tail = drone(page, TAILSCALE)
    drawn = page.locator(".topo-stage").get_attribute("data-packets-drawn")
    last = tail.get_attribute("data-last-heartbeat-seq")
    # The drone beats on (three more heartbeats in the controller's log) and the hidden page draws none.
    mark = protocol(swarm, "/admin/api/protocol?limit=1")["last_seq"]
    wait_for(
        lambda: (
            len(
                protocol(swarm, f"/admin/api/protocol?after={mark}&drone={TAILSCALE}&type=heartbeat")[
                    "entries"
                ]
            )
            >= 3
        ),
        what="three more heartbeats",
    )
    assert tail.get_attribute("data-last-heartbeat-seq") == last
    assert page.locator(".topo-stage").get_attribute("data-packets-drawn") == drawn
    # Back: live again.
    page.click('nav a[data-page="topology"]')
    expect(page.locator(".topo-stage")).not_to_have_attribute(
        "data-packets-drawn", drawn or "", timeout=WAIT_MS
    )
    assert problems.unexpected() == []
