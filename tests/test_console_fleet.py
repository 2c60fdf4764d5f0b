"""The console's drones actions and its queue page in headless Chromium,
against a real controller with builds on and real agents in Gentoo
prefixes (support.fleet): ping, drain, reboot refused for a bare-metal
drone, restart behind a confirmation, queueing a package and watching its
job build, a waiting job that says why, and a drone held from builds
while a payload deploy to it is under way ("updating"). The drones write their
packages with Portage's gpkg code instead of building them
(support/gpkg_build.py): the pages are the point here, real builds are
tests/test_builds.py's.

Screenshots go to test-artifacts/console/ (drones-actions, drones-menu, queue,
queue-why).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from support.browser import WAIT_MS, Problems, shot
from support.fleet import Fleet, admin, builders, start_fleet
from support.gpkgs import WRITE_COMMAND
from support.payloads import AGENT_CONFIG, Drone, HandDrone, staged
from support.procs import enroll_here, wait_for

pytestmark = pytest.mark.timeout(300)

BUILDER = "builder-0"
METAL = "metal-0"
BUILD_MS = 90_000
LEAVES = ("data", "hello", "script")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    s = start_fleet(root, builders(1), "--ping-interval", "0.5", portage=True, command=WRITE_COMMAND)
    try:
        # A second, bare-metal drone that builds like the first.
        s.add_agent(METAL, clean_build_dir=False, drone_type="bare-metal", online=True, command=WRITE_COMMAND)
        yield s
    finally:
        s.stop()


def dispatch(swarm: Fleet, drone: str) -> dict[str, Any]:
    drones = admin(swarm, "GET", "/admin/api/drones")["drones"]
    return next(d["dispatch"] for d in drones if d["name"] == drone)


def open_page(browser: BrowserContext, swarm: Fleet, route: str) -> tuple[Page, Problems]:
    """Sign in on the way to a console page, as a bookmark of it would."""
    page = browser.new_page()
    problems = Problems(page)
    page.goto(f"{swarm.controller.admin_url}/#/{route}")
    expect(page).to_have_url(re.compile(rf"/login#/{route}$"))
    page.fill("#key", swarm.controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(rf"/#/{route}$"), timeout=WAIT_MS)
    return page, problems


def unexpected(problems: Problems, *statuses: int) -> list[str]:
    """The page's problems, less the failed loads of answers the test provoked."""
    return [p for p in problems.unexpected() if not any(f"status of {s} " in p for s in statuses)]


def row(page: Page, drone: str) -> Locator:
    return page.locator(f'tr[data-drone="{drone}"]')


def menu(page: Page, drone: str) -> Locator:
    """Open the drone's More menu; the menu (a popover) is returned once shown."""
    button = row(page, drone).get_by_role("button", name=f"More actions for {drone}")
    button.click()
    popup = page.locator(f"#{button.get_attribute('aria-controls')}")
    expect(popup).to_be_visible()
    return popup


def live_round(page: Page) -> None:
    """Wait for the page's next poll (its Live clock changes)."""
    before = page.locator(".live").first.inner_text()
    expect(page.locator(".live").first).not_to_have_text(before, timeout=WAIT_MS)


# -- drones ----------------------------------------------------------------------------


def test_the_drones_table_shows_the_fleet_and_pings_from_it(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_page(browser, swarm, "drones")
    for name, kind in ((BUILDER, "unknown"), (METAL, "bare-metal")):
        r = row(page, name)
        expect(r).to_have_attribute("data-status", "online", timeout=WAIT_MS)
        expect(r).to_contain_text(kind)
        expect(r.locator("td.num").nth(2)).to_contain_text(re.compile(r"\d ms"), timeout=WAIT_MS)
        expect(r).to_contain_text(re.compile(r"\d+%"))  # disk
        expect(r).to_contain_text("payload")
        # The agent's evidence for its type (here: what its --drone-type said).
        type_cell = r.locator("td").nth(2)
        expect(type_cell).to_have_attribute("title", "set in the agent's configuration (drone_type)")
    node = swarm.controller.node(BUILDER)
    assert node is not None
    expect(row(page, BUILDER)).to_contain_text(node["agent_version"])

    row(page, BUILDER).get_by_role("button", name="Ping").click()
    toast = page.locator(f'.toast[data-action="ping"][data-drone="{BUILDER}"]')
    expect(toast).to_contain_text(re.compile(rf"{BUILDER} answered in \d+(\.\d)? ms"), timeout=WAIT_MS)
    expect(toast).to_contain_text("pass")
    assert any(e["type"] == "drone_pinged" for e in swarm.controller.events(type="drone_pinged"))
    assert problems.unexpected() == []


def test_drain_from_the_table_and_the_menu_outlives_a_refresh(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_page(browser, swarm, "drones")
    r = row(page, BUILDER)
    expect(r).to_have_attribute("data-draining", "false", timeout=WAIT_MS)
    popup = menu(page, BUILDER)
    live_round(page)  # a poll while the menu is open leaves it open
    expect(popup).to_be_visible()
    expect(popup.get_by_role("menuitem", name="Logs")).to_be_focused()  # the first item
    popup.get_by_role("menuitem", name="Drain").click()
    expect(r).to_have_attribute("data-draining", "true", timeout=WAIT_MS)
    expect(r.locator(".pill-draining")).to_be_visible()
    assert dispatch(swarm, BUILDER)["draining"] and dispatch(swarm, BUILDER)["drained_by"] == "admin"
    live_round(page)
    expect(r).to_have_attribute("data-draining", "true")
    expect(page.locator(".page-sub").first).to_contain_text("1 held")
    shot(page, "drones-actions")

    # Back by keyboard: Enter opens the menu on its first item, arrows move, Enter acts.
    button = r.get_by_role("button", name=f"More actions for {BUILDER}")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Logs")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name="Undrain")).to_be_focused()
    page.keyboard.press("Enter")
    expect(r).to_have_attribute("data-draining", "false", timeout=WAIT_MS)
    assert not dispatch(swarm, BUILDER)["draining"]
    assert problems.unexpected() == []


def test_reboot_is_refused_with_its_reason(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_page(browser, swarm, "drones")
    expect(row(page, METAL)).to_have_attribute("data-status", "online", timeout=WAIT_MS)
    reboot = menu(page, METAL).get_by_role("menuitem", name=re.compile("Reboot"))
    expect(reboot).to_contain_text("a bare-metal drone is never rebooted")
    expect(reboot).to_be_disabled()
    expect(reboot).to_have_attribute("title", re.compile("bare-metal drone is never rebooted"))
    shot(page, "drones-menu")
    reboot.click(force=True)  # nothing happens: no dialog, no request
    expect(page.locator("dialog.dialog")).not_to_be_visible()
    page.keyboard.press("Escape")

    # An lxc drone with a hypervisor host may be rebooted; if the controller
    # refuses after all (its type changed meanwhile), the 409 is shown.
    admin(swarm, "PUT", f"/admin/api/drones/{BUILDER}", {"type": "lxc", "host": "pve1", "reboot": "true"})
    try:
        reboot = menu(page, BUILDER).get_by_role("menuitem", name=re.compile("Reboot"))
        expect(reboot).to_be_enabled()
        expect(row(page, BUILDER)).to_contain_text("lxc")
        expect(row(page, BUILDER).locator("td").nth(2)).to_have_attribute(
            "title", "set by an admin; the agent says unknown (set in the agent's configuration (drone_type))"
        )
        admin(swarm, "PUT", f"/admin/api/drones/{BUILDER}", {"type": "bare-metal"})
        reboot.click()
        dialog = page.locator("dialog.dialog")
        expect(dialog).to_contain_text(f"Reboot {BUILDER}?")
        dialog.get_by_role("button", name="Reboot").click()
        toast = page.locator('.toast-error[data-action="reboot"]')
        expect(toast).to_contain_text("only lxc and qemu drones are rebooted", timeout=WAIT_MS)
    finally:
        admin(swarm, "PUT", f"/admin/api/drones/{BUILDER}", {})
    assert not [e for e in swarm.controller.events(type="heal_action") if e["data"].get("step") == "reboot"]
    assert unexpected(problems, 409) == []


def test_restart_asks_first(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_page(browser, swarm, "drones")
    node = swarm.controller.node(BUILDER)
    assert node is not None and node["instance_id"]
    expect(row(page, BUILDER)).to_have_attribute("data-status", "online", timeout=WAIT_MS)

    menu(page, BUILDER).get_by_role("menuitem", name="Restart agent").click()
    dialog = page.locator("dialog.dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Restart the agent on {BUILDER}?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    live_round(page)  # a poll leaves the dialog open
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).not_to_be_visible()
    expect(row(page, BUILDER).get_by_role("button", name=f"More actions for {BUILDER}")).to_be_focused()
    live_round(page)
    assert not swarm.controller.events(type="heal_action")
    assert swarm.controller.known_node(BUILDER)["instance_id"] == node["instance_id"]

    # Escape cancels as well; Restart goes through.
    menu(page, BUILDER).get_by_role("menuitem", name="Restart agent").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).not_to_be_visible()
    menu(page, BUILDER).get_by_role("menuitem", name="Restart agent").click()
    dialog.get_by_role("button", name="Restart").click()
    toast = page.locator(f'.toast[data-action="restart"][data-drone="{BUILDER}"]')
    expect(toast).to_contain_text("asked the agent over its control stream", timeout=WAIT_MS)
    wait_for(
        lambda: (
            (n := swarm.controller.node(BUILDER))
            and n["status"] == "online"
            and n["instance_id"] != node["instance_id"]
        ),
        what=f"{BUILDER} back as a new agent process",
    )
    expect(row(page, BUILDER)).to_have_attribute("data-status", "online", timeout=WAIT_MS)
    assert problems.unexpected() == []


# -- queue -----------------------------------------------------------------------------


def queue_from_page(page: Page, atom: str) -> Locator:
    """Queue one atom with the form; the job's row once it shows."""
    page.fill("#queue-atoms", atom)
    page.get_by_role("button", name="Queue", exact=True).click()
    expect(page.locator('.toast[data-action="queue"]')).to_contain_text("queued in", timeout=WAIT_MS)
    cpv = re.compile(re.escape(atom) + "-[0-9]")
    job = page.locator("tr.job-row").filter(has_text=cpv)
    expect(job).to_have_count(1, timeout=WAIT_MS)
    return job


def test_queue_a_package_and_watch_it_build(swarm: Fleet, browser: BrowserContext) -> None:
    page, problems = open_page(browser, swarm, "queue")
    expect(page.locator("h1#queue-title")).to_be_visible()

    # Bad input: the controller's message, inline.
    page.fill("#queue-atoms", "no-such-category/nothing-at-all")
    page.get_by_role("button", name="Queue", exact=True).click()
    expect(page.locator(".form-error")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#queue-atoms")).to_have_attribute("aria-invalid", "true")

    job = queue_from_page(page, "swarm-test/leaf-data")
    expect(job).to_have_attribute("data-state", "done", timeout=BUILD_MS)
    job_id = job.get_attribute("data-job")
    assert job_id
    answer = admin(swarm, "GET", f"/admin/api/jobs/{job_id}")
    assert answer["job"]["state"] == "done" and answer["builds"][0]["state"] == "done"
    session = page.locator(f'.session[data-session="{answer["job"]["session_id"]}"]')
    expect(session).to_contain_text("1 of 1 done", timeout=WAIT_MS)
    expect(session).to_have_attribute("data-state", "complete", timeout=WAIT_MS)

    # Its details: the builds, the build log (served by the admin tier) and the drone's log.
    job.get_by_role("button", name="Details").click()
    detail = page.locator(f'tr[data-detail="{job_id}"]')
    build = answer["builds"][0]
    expect(detail.locator(".builds-table tbody tr")).to_contain_text(build["build_id"], timeout=WAIT_MS)
    expect(detail.locator(".builds-table tbody tr")).to_contain_text(build["drone"])
    log_link = detail.get_by_role("link", name="Build log")
    assert log_link.get_attribute("href") == f"/admin/api/jobs/{job_id}/log"
    response = page.request.get(swarm.controller.admin_url + f"/admin/api/jobs/{job_id}/log")
    assert response.status == 200 and "leaf-data" in response.text()
    drone_log = detail.get_by_role("link", name="Drone log").get_attribute("href")
    assert drone_log and drone_log.startswith("#/logs?drone=") and f"source=build%2F{job_id}" in drone_log

    # Filters: by state, by text.
    page.locator('.chip[data-filter="failed,cancelled"]').click()
    expect(page.locator("tr.job-row")).to_have_count(0, timeout=WAIT_MS)
    page.locator('.chip[data-filter=""]').click()
    page.fill("#jobs-filter", "nothing-like-this")
    expect(page.locator("tr.job-row")).to_have_count(0, timeout=WAIT_MS)
    page.fill("#jobs-filter", "leaf-DATA")
    expect(page.locator("tr.job-row")).to_have_count(1, timeout=WAIT_MS)
    shot(page, "queue")
    assert unexpected(problems, 400, 404) == []


def test_a_waiting_job_says_why(swarm: Fleet, browser: BrowserContext) -> None:
    for agent in swarm.agents.values():
        admin(swarm, "POST", f"/admin/api/drones/{agent.name}/drain")
    page, problems = open_page(browser, swarm, "queue")
    try:
        job = queue_from_page(page, "swarm-test/leaf-hello")
        expect(job).to_have_attribute("data-state", "queued", timeout=WAIT_MS)
        job.get_by_role("button", name="Why?").click()
        why = page.locator(f'tr[data-detail="{job.get_attribute("data-job")}"] .job-why')
        expect(why).to_have_text("every drone is grounded or draining", timeout=WAIT_MS)
        expect(page.locator('.chip[data-filter="blocked,queued"]')).to_be_visible()
        page.locator('.chip[data-filter="blocked,queued"]').click()
        expect(page.locator("tr.job-row")).to_have_count(1, timeout=WAIT_MS)
        shot(page, "queue-why")
    finally:
        for agent in swarm.agents.values():
            admin(swarm, "POST", f"/admin/api/drones/{agent.name}/undrain")
    # Released, it builds; the expanded row follows along.
    page.locator('.chip[data-filter=""]').click()
    expect(job).to_have_attribute("data-state", "done", timeout=BUILD_MS)
    expect(why).to_have_text(re.compile(r"^built on (builder|metal)-0$"), timeout=WAIT_MS)
    assert problems.unexpected() == []


def test_sessions_are_controlled_from_the_page(swarm: Fleet, browser: BrowserContext) -> None:
    admin(swarm, "POST", "/admin/api/drones/builder-0/ground")
    admin(swarm, "POST", f"/admin/api/drones/{METAL}/ground")
    page, problems = open_page(browser, swarm, "queue")
    try:
        page.fill("#queue-session", "ctl-test")
        job = queue_from_page(page, "swarm-test/leaf-script")
        session_id = admin(swarm, "GET", f"/admin/api/jobs/{job.get_attribute('data-job')}")["job"][
            "session_id"
        ]
        card = page.locator(f'.session[data-session="{session_id}"]')
        expect(card).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        card.get_by_role("button", name="Pause").click()
        expect(card).to_have_attribute("data-state", "paused", timeout=WAIT_MS)
        job.get_by_role("button", name="Why?").click()
        expect(page.locator(f'tr[data-detail="{job.get_attribute("data-job")}"] .job-why')).to_have_text(
            "the session is paused", timeout=WAIT_MS
        )
        # Stop asks first; cancelling leaves the session as it was.
        card.get_by_role("button", name="Stop").click()
        dialog = page.locator("dialog.dialog")
        expect(dialog).to_contain_text("Stop ctl-test?")
        dialog.get_by_role("button", name="Cancel").click()
        live_round(page)
        expect(card).to_have_attribute("data-state", "paused")
        card.get_by_role("button", name="Stop").click()
        dialog.get_by_role("button", name="Stop").click()
        expect(card).to_have_attribute("data-state", "stopped", timeout=WAIT_MS)
        sessions = {s["id"]: s for s in admin(swarm, "GET", "/admin/api/sessions")["sessions"]}
        assert sessions[session_id]["state"] == "stopped"
        card.get_by_role("button", name="Start").click()
        expect(card).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    finally:
        admin(swarm, "POST", "/admin/api/drones/builder-0/unground")
        admin(swarm, "POST", f"/admin/api/drones/{METAL}/unground")
    expect(job).to_have_attribute("data-state", "done", timeout=BUILD_MS)
    assert problems.unexpected() == []


def test_the_admin_queue_narrows_and_refuses_bad_filters(swarm: Fleet) -> None:
    status, body = swarm.controller.admin("GET", "/admin/api/queue?state=nonsense")
    assert status == 400 and "state must be among" in body["error"]["message"]
    status, body = swarm.controller.admin("GET", "/admin/api/queue?session=s-nope")
    assert status == 404
    leaves = "/admin/api/queue?state=done&q=LEAF-"
    if admin(swarm, "GET", leaves)["total"] < 3:
        # Run alone, not after the page tests that built them.
        admin(swarm, "POST", "/admin/api/queue", {"atoms": [f"swarm-test/leaf-{n}" for n in LEAVES]})
        wait_for(lambda: admin(swarm, "GET", leaves)["total"] >= 3, timeout=BUILD_MS / 1000, what="3 leaves")
    everything = admin(swarm, "GET", "/admin/api/queue?limit=5000")
    assert everything["total"] >= 3
    done = admin(swarm, "GET", leaves)
    assert done["total"] >= 3 and all(j["state"] == "done" and "leaf-" in j["cpv"] for j in done["jobs"])
    one = admin(swarm, "GET", "/admin/api/queue?limit=1")
    assert len(one["jobs"]) == 1 and one["total"] == everything["total"]
    public = swarm.controller.get("/api/v1/sessions")["sessions"]
    assert admin(swarm, "GET", "/admin/api/sessions")["sessions"] == public


def test_a_drone_held_for_a_payload_shows_updating(
    swarm: Fleet, browser: BrowserContext, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A deploy under way holds its drone from builds; the Drones page says so
    (a drone spoken by hand that never answers: the deploy stays under way)."""
    state_dir = tmp_path_factory.mktemp("held") / "held-0"
    with ThreadPoolExecutor(1) as pool:  # an event loop of its own, not Playwright's thread's
        drone_id = pool.submit(enroll_here, swarm.controller, "held-0", state_dir).result(60)
    version = staged(swarm, "agent-config", AGENT_CONFIG, "held")
    with HandDrone(swarm.controller.grpc_target, Drone("held-0", drone_id, state_dir), runs=0, silent=True):
        admin(swarm, "POST", f"/admin/api/payloads/agent-config/{version}/deploy", {"drones": ["held-0"]})
        # Held from the deploy's start ("to take agent-config (deploy d-...)"),
        # then said with its version once it is sent.
        wait_for(
            lambda: (
                f"agent-config version {version}" in (dispatch(swarm, "held-0")["held_for_payload"] or "")
            ),
            what="the hold",
        )
        page, problems = open_page(browser, swarm, "drones")
        pill = row(page, "held-0").locator(".pill-updating")
        expect(pill).to_be_visible(timeout=WAIT_MS)
        expect(pill).to_have_attribute("title", re.compile(f"agent-config version {version}"))
        expect(row(page, BUILDER).locator(".pill-updating")).to_be_hidden()
        assert problems.unexpected() == []
