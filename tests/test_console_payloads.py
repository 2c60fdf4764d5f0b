"""The console's Payloads page, in headless Chromium against one real
controller process (mTLS on, so payloads are): an agent-config uploaded
with the form is listed as the API has it and staged through its dialog; a
bad one's 400 is shown in the form. A deploy through the dialog goes to a
drone that speaks the control stream by hand (support.payloads.Stream, as
tests/test_payloads.py drives them; what a real agent does with a payload is
test_payload_deploy's), which refuses it: the drift table shows that drone's
expected against running version, highlighted, with the refusal and the
drone's reason, and the payload_refused event arrives live. A deploy to a
drone that is not connected keeps the dialog open with the controller's 409.
Rollouts (the same dialog, with a strategy): one whose canary refuses ends
rolled back, its card showing each drone's state and reason as the API has
them; one held at the canary's gate (the drone never answers) is paused,
resumed, aborted and rolled back from its card.

Screenshots go to test-artifacts/console/ (payloads, payloads-drift,
payloads-deploy, payloads-rollout).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from support.browser import WAIT_MS, Problems, shot
from support.fleet import Fleet, admin, start_fleet
from support.payloads import AGENT_CONFIG, REASON, Drone, HandDrone, Stream, staged
from support.procs import enroll_here, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    s = start_fleet(tmp_path_factory.mktemp("payloads"), ())
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def drones(swarm: Fleet) -> tuple[Drone, Drone]:
    """Two enrolled identities: "refuser" connects by hand in a test; "absent" said
    Hello once and left (the fleet knows it, it is not connected)."""
    made = []
    # These run event loops: not in the thread whose loop Playwright's sync API owns.
    with ThreadPoolExecutor(1) as pool:
        for name in ("refuser", "absent"):
            state_dir = swarm.root / "drones" / name
            drone_id = pool.submit(enroll_here, swarm.controller, name, state_dir).result(60)
            made.append(Drone(name, drone_id, state_dir))
        pool.submit(asyncio.run, say_hello(swarm.controller.grpc_target, made[1])).result(60)
    wait_for(lambda: not swarm.online("absent"), what="absent gone again")
    return made[0], made[1]


async def say_hello(target: str, drone: Drone) -> None:
    async with Stream(target, drone):
        pass


def open_payloads(browser: BrowserContext, swarm: Fleet) -> tuple[Page, Problems]:
    """Sign in on the way to the Payloads page, as a bookmark of it would."""
    page = browser.new_page()
    problems = Problems(page)
    page.goto(f"{swarm.controller.admin_url}/#/payloads")
    expect(page).to_have_url(re.compile(r"/login#/payloads$"))
    page.fill("#key", swarm.controller.admin_key)
    page.press("#key", "Enter")
    expect(page).to_have_url(re.compile(r"/#/payloads$"), timeout=WAIT_MS)
    return page, problems


def version_row(page: Page, kind: str, version: int) -> Locator:
    return page.locator(f'table[data-kind="{kind}"] tr[data-version="{version}"]')


def payload(swarm: Fleet, kind: str, version: int) -> dict[str, Any]:
    answer: dict[str, Any] = admin(swarm, "GET", f"/admin/api/payloads/{kind}/{version}")
    return answer


def upload_file(page: Page, path: Path, kind: str, notes: str) -> None:
    page.select_option("#pl-kind", kind)
    page.set_input_files("#pl-file", str(path))
    page.fill("#pl-notes", notes)
    page.get_by_role("button", name="Upload", exact=True).click()


def unexpected(problems: Problems, *statuses: int) -> list[str]:
    """The page's problems, less the failed loads of answers the test provoked."""
    return [p for p in problems.unexpected() if not any(f"status of {s} " in p for s in statuses)]


def test_an_upload_is_listed_as_the_api_has_it_and_staged(
    swarm: Fleet, browser: BrowserContext, tmp_path: Path
) -> None:
    page, problems = open_payloads(browser, swarm)
    expect(page.locator("nav a[data-page=payloads]")).to_have_attribute("aria-current", "page")
    expect(page.locator("#payloads-summary")).to_contain_text("signed by", timeout=WAIT_MS)

    # Not an agent config: the controller's 400 is shown in the form, nothing is listed.
    bad = tmp_path / "broken.toml"
    bad.write_bytes(b"controller = [")
    upload_file(page, bad, "agent-config", "broken")
    expect(page.locator("#pl-upload-error")).to_contain_text("not an agent config", timeout=WAIT_MS)
    assert all(p["notes"] != "broken" for p in admin(swarm, "GET", "/admin/api/payloads")["payloads"])

    good = tmp_path / "agent.toml"
    good.write_bytes(AGENT_CONFIG)
    upload_file(page, good, "agent-config", "slower heartbeats")
    toast = page.locator('.toast-ok[data-action="upload"]')
    expect(toast).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#pl-upload-error")).to_be_hidden()
    version = int(toast.get_attribute("data-version") or 0)
    shown = payload(swarm, "agent-config", version)
    assert (
        shown["sha256"] == hashlib.sha256(AGENT_CONFIG).hexdigest() and shown["notes"] == "slower heartbeats"
    )
    assert shown["state"] == "uploaded" and shown["uploaded_by"] == "admin:admin"
    row = version_row(page, "agent-config", version)
    expect(row).to_have_attribute("data-state", "uploaded", timeout=WAIT_MS)
    expect(row.locator(".pl-sha")).to_have_text(shown["sha256"][:16])
    expect(row.locator(".pl-sha")).to_have_attribute("title", f"sha256 {shown['sha256']}")
    expect(row.locator("td.num")).to_have_text(f"{len(AGENT_CONFIG)} B")
    expect(row).to_contain_text("slower heartbeats")
    expect(row).to_contain_text("admin")
    expect(row.get_by_role("button", name=f"Deploy agent-config v{version}")).to_be_disabled()

    # Stage asks first; Cancel leaves it as it was.
    stage = row.get_by_role("button", name=f"Stage agent-config v{version}")
    stage.click()
    dialog = page.locator("dialog.dialog").filter(has_text=f"Stage agent-config v{version}?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(stage).to_be_focused()
    assert payload(swarm, "agent-config", version)["state"] == "uploaded"
    stage.click()
    dialog.get_by_role("button", name="Stage", exact=True).click()
    expect(row).to_have_attribute("data-state", "staged", timeout=WAIT_MS)
    assert payload(swarm, "agent-config", version)["state"] == "staged"
    expect(stage).to_be_hidden()
    expect(row.get_by_role("button", name=f"Deploy agent-config v{version}")).to_be_enabled()
    expect(page.locator("#pl-versions-agent-config .pl-count")).to_contain_text(f"v{version} staged")
    shot(page, "payloads")
    assert unexpected(problems, 400) == []


def test_a_deploy_from_the_dialog_refused_by_the_drone_shows_as_drift_with_its_reason(
    swarm: Fleet, browser: BrowserContext, drones: tuple[Drone, Drone]
) -> None:
    refuser, absent = drones
    version = staged(swarm, "agent-config", AGENT_CONFIG, "for-the-refuser")
    with HandDrone(swarm.controller.grpc_target, refuser, runs=3):
        page, problems = open_payloads(browser, swarm)
        # Its Hello said portage-config v3 and nothing was deployed to it: in step.
        reported = page.locator('tr[data-drone="refuser"][data-kind="portage-config"]')
        expect(reported).to_have_attribute("data-drift", "false", timeout=WAIT_MS)
        expect(reported).to_contain_text("v3")

        deploy = version_row(page, "agent-config", version).get_by_role(
            "button", name=f"Deploy agent-config v{version}"
        )
        # A drone that is not connected: the controller's 409 stays in the dialog.
        deploy.click()
        dialog = page.locator("dialog.pl-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator(".dialog-title")).to_have_text(f"Deploy agent-config v{version}?")
        # Focus on its first choice: where it goes (one drone, checked, is a plain deploy).
        expect(page.locator("#pl-mode-one")).to_be_focused()
        expect(page.locator("#pl-mode-one")).to_be_checked()
        expect(page.locator("#pl-canary")).to_be_hidden()  # the strategy is a rollout's
        expect(page.locator(f'#pl-deploy-drone option[value="{absent.name}"]')).to_have_text(
            f"{absent.name} (not connected)"
        )
        page.select_option("#pl-deploy-drone", absent.name)
        dialog.get_by_role("button", name="Deploy", exact=True).click()
        expect(page.locator("#pl-deploy-error")).to_contain_text("not connected", timeout=WAIT_MS)
        expect(dialog).to_be_visible()
        versions = admin(swarm, "GET", "/admin/api/drones/versions")["versions"]
        assert not [v for v in versions if v["drone"] == absent.name]

        # To the connected drone, which refuses it.
        page.select_option("#pl-deploy-drone", "refuser")
        dialog.get_by_role("button", name="Deploy", exact=True).click()
        expect(dialog).not_to_be_visible()
        expect(deploy).to_be_focused()
        expect(page.locator('.toast-ok[data-action="deploy"]')).to_contain_text("sent to refuser")
        drift = page.locator('tr[data-drone="refuser"][data-kind="agent-config"]')
        expect(drift).to_have_attribute("data-state", "refused", timeout=WAIT_MS)
        assert refuser_version(swarm, "agent-config") == {
            "expected": version,
            "running": 0,
            "drift": True,
            "state": "refused",
            "reason": REASON,
        }
        expect(drift).to_have_attribute("data-drift", "true")
        expect(drift).to_have_class(re.compile(r"\bpl-drifting\b"))
        expect(drift.locator(".pl-drift")).to_have_text("drift")
        cells = drift.locator("td.num")
        expect(cells.nth(0)).to_have_text(f"v{version}")
        expect(cells.nth(1)).to_have_text("installed")
        expect(drift.locator(".pl-last")).to_contain_text("refused")
        expect(drift.locator(".pl-reason")).to_have_text(REASON)
        expect(page.locator("#payloads-summary")).to_have_attribute(
            "data-drifting", str(admin(swarm, "GET", "/admin/api/drones/versions")["drifting"])
        )
        # The refusal came over /ws/events.
        expect(page.locator('.pl-events li[data-type="payload_refused"]').first).to_contain_text(
            "signature does not verify"
        )

        # Only drifting: the row in step goes, the drifting one stays.
        page.check("#pl-only-drift")
        expect(reported).to_have_count(0)
        expect(drift).to_be_visible()
        shot(page, "payloads-drift")
        assert unexpected(problems, 409) == []


def refuser_version(swarm: Fleet, kind: str) -> dict[str, Any]:
    versions = admin(swarm, "GET", "/admin/api/drones/versions")["versions"]
    [found] = [v for v in versions if v["drone"] == "refuser" and v["kind"] == kind]
    return {k: found[k] for k in ("expected", "running", "drift", "state", "reason")}


def start_rollout(page: Page, kind: str, version: int, *drones: str, gate: int, pause: int = 0) -> str:
    """Start a rollout to the drones picked (canary 1, batch 1, ``pause`` s between
    batches) from the deploy dialog; its id."""
    version_row(page, kind, version).get_by_role("button", name=f"Deploy {kind} v{version}").click()
    dialog = page.locator("dialog.pl-dialog")
    expect(dialog).to_be_visible()
    page.get_by_label("Drones I pick").check()
    for name in drones:
        dialog.get_by_role("checkbox", name=re.compile(f"^{name}")).check()
    page.fill("#pl-canary", "1")
    page.fill("#pl-batch", "1")
    page.fill("#pl-gate", str(gate))
    page.fill("#pl-pause", str(pause))
    shot(page, "payloads-deploy")
    dialog.get_by_role("button", name="Start rollout").click()
    expect(dialog).not_to_be_visible()
    toast = page.locator(f'.toast-ok[data-action="rollout"]:has-text("{kind} v{version}")')
    expect(toast).to_be_visible(timeout=WAIT_MS)
    rollout_id = toast.get_attribute("data-rollout")
    assert rollout_id
    return rollout_id


def test_a_rollout_from_the_dialog_stops_at_the_refusing_canary_and_shows_why(
    swarm: Fleet, browser: BrowserContext, drones: tuple[Drone, Drone]
) -> None:
    refuser, absent = drones
    version = staged(swarm, "agent-config", AGENT_CONFIG, "rolled-out")
    with HandDrone(swarm.controller.grpc_target, refuser, runs=3):
        page, problems = open_payloads(browser, swarm)
        expect(page.locator("#pl-rollouts-title")).to_be_visible(timeout=WAIT_MS)
        rollout_id = start_rollout(page, "agent-config", version, refuser.name, absent.name, gate=30)
        card = page.locator(f'article[data-rollout="{rollout_id}"]')
        # The canary failed its gate; with auto-rollback (the default) it ends rolled back.
        expect(card).to_have_attribute("data-state", "rolled_back", timeout=30_000)
        answer = admin(swarm, "GET", f"/admin/api/rollouts/{rollout_id}")
        assert answer["state"] == card.get_attribute("data-state") and answer["reason"]
        assert answer["strategy"]["canary"] == 1 and answer["strategy"]["gate_timeout_s"] == 30
        assert sorted(answer["target"]["drones"]) == sorted([refuser.name, absent.name])
        expect(card).to_contain_text(f"agent-config v{version} to")
        expect(card.locator(":scope > .pl-reason")).to_have_text(answer["reason"])
        for d in answer["drones"]:
            line = card.locator(f'li[data-drone="{d["drone"]}"]')
            expect(line).to_have_attribute("data-state", d["state"])
            if d["reason"]:
                expect(line.locator(".pl-reason")).to_have_text(d["reason"])
        [refused] = [d for d in answer["drones"] if d["drone"] == refuser.name]
        assert refused["state"] == "failed", answer
        # Over: none of its verbs is offered (a rolled-back rollout takes none).
        for verb in ("Pause", "Resume", "Abort", "Roll back"):
            expect(card.get_by_role("button", name=verb)).to_be_hidden()
        expect(page.locator('.pl-events li[data-type="rollout_failed"]').first).to_be_visible()
        page.evaluate("window.scrollTo(0, 0)")  # the drift and the rollout together
        shot(page, "payloads-rollout")
        assert unexpected(problems) == []


def test_a_rollout_is_paused_resumed_aborted_and_rolled_back_from_its_card(
    swarm: Fleet, browser: BrowserContext, drones: tuple[Drone, Drone]
) -> None:
    refuser, _ = drones
    version = staged(swarm, "agent-config", AGENT_CONFIG, "held-at-the-gate")
    # The drone never answers: the canary waits at its gate while the admin acts.
    with HandDrone(swarm.controller.grpc_target, refuser, runs=3, silent=True):
        page, problems = open_payloads(browser, swarm)
        rollout_id = start_rollout(page, "agent-config", version, refuser.name, gate=120)
        card = page.locator(f'article[data-rollout="{rollout_id}"]')
        path = f"/admin/api/rollouts/{rollout_id}"

        def verb(name: str) -> Locator:
            return card.get_by_role("button", name=name, exact=True)

        expect(card).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        expect(card.locator(f'li[data-drone="{refuser.name}"]')).to_have_attribute("data-state", "sent")
        expect(verb("Resume")).to_be_hidden()
        expect(verb("Roll back")).to_be_hidden()

        verb("Pause").click()
        expect(card).to_have_attribute("data-state", "paused", timeout=WAIT_MS)
        assert admin(swarm, "GET", path)["state"] == "paused"
        expect(card.locator(":scope > .pl-reason")).to_have_text("paused by admin:admin")
        expect(verb("Pause")).to_be_hidden()

        verb("Resume").click()
        expect(card).to_have_attribute("data-state", "running", timeout=WAIT_MS)
        assert admin(swarm, "GET", path)["state"] == "running"

        # Abort asks first, naming what it does; Cancel leaves it running.
        verb("Abort").click()
        dialog = page.locator("dialog.dialog").filter(
            has_text=f"Abort the rollout of agent-config v{version}?"
        )
        expect(dialog).to_contain_text("the drones that took it keep it")
        dialog.get_by_role("button", name="Cancel").click()
        expect(verb("Abort")).to_be_focused()
        assert admin(swarm, "GET", path)["state"] == "running"
        verb("Abort").click()
        dialog.get_by_role("button", name="Abort", exact=True).click()
        expect(card).to_have_attribute("data-state", "aborted", timeout=WAIT_MS)
        assert admin(swarm, "GET", path)["state"] == "aborted"

        verb("Roll back").click()
        dialog = page.locator("dialog.dialog").filter(
            has_text=f"Roll back the rollout of agent-config v{version}?"
        )
        dialog.get_by_role("button", name="Roll back", exact=True).click()
        expect(card).to_have_attribute("data-state", "rolled_back", timeout=WAIT_MS)
        assert admin(swarm, "GET", path)["state"] == "rolled_back"
        for event in ("rollout_paused", "rollout_resumed", "rollout_aborted"):
            expect(page.locator(f'.pl-events li[data-type="{event}"]').first).to_be_visible()
        assert unexpected(problems) == []


def test_a_rollout_in_its_pause_says_when_the_next_batch_starts(
    swarm: Fleet, browser: BrowserContext, drones: tuple[Drone, Drone]
) -> None:
    second, canary = drones  # the plan goes by name: "absent" is the canary
    version = staged(swarm, "agent-config", AGENT_CONFIG, "paused-between-batches")
    with (
        HandDrone(swarm.controller.grpc_target, canary, runs=3, applies=True),
        HandDrone(swarm.controller.grpc_target, second, runs=3, silent=True),
    ):
        page, problems = open_payloads(browser, swarm)
        rollout_id = start_rollout(
            page, "agent-config", version, canary.name, second.name, gate=60, pause=600
        )
        card = page.locator(f'article[data-rollout="{rollout_id}"]')
        path = f"/admin/api/rollouts/{rollout_id}"
        expect(card.locator(f'li[data-drone="{canary.name}"]')).to_have_attribute(
            "data-state", "passed", timeout=WAIT_MS
        )
        starts = wait_for(lambda: admin(swarm, "GET", path)["next_batch_at"], what="the pause")
        shown = page.evaluate("iso => new Date(iso).toLocaleTimeString()", starts)
        expect(card.locator(".pl-rollout-progress")).to_contain_text(f"batch 2 of 2 starts at {shown}")
        card.get_by_role("button", name="Abort", exact=True).click()
        page.locator("dialog.dialog").get_by_role("button", name="Abort", exact=True).click()
        expect(card).to_have_attribute("data-state", "aborted", timeout=WAIT_MS)
        expect(card.locator(".pl-rollout-progress")).not_to_contain_text("starts at")
        assert unexpected(problems) == []
