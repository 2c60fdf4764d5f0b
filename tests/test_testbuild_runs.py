"""Test builds run for real: a controller, one drone running real emerge in
its Gentoo prefix, the test binhost, a stock Portage client of staging, an
SMTP server (aiosmtpd) and a webhook receiver started by the test. One
fleet for the module; each test submits test builds of its own. A test
build never installs its package on the drone (its prefix's vdb says so)
and takes build dependencies only from staging."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

import prefix as pfx
import psutil
import pytest
from aiosmtpd.controller import Controller as SmtpController
from aiosmtpd.handlers import Message as MessageHandler

from support.fleet import Fleet, admin, start_fleet
from support.procs import http, wait_for
from support.sshd import free_port
from support.webhook import Webhook

pytestmark = pytest.mark.timeout(300)

DRONE = "builder-0"
SLEEP = 4  # seconds the sleeper builds: long enough to queue behind it
BUILD_TIMEOUT = 120.0


class Inbox(MessageHandler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []

    def handle_message(self, message: Message) -> None:
        self.messages.append(message)


@dataclass
class Swarm:
    fleet: Fleet
    inbox: Inbox
    hook: Webhook
    secret: str

    def submit(self, package: str, **extra: Any) -> dict[str, Any]:
        status, body = http(
            "POST",
            self.fleet.controller.public_url + "/api/v1/test-build",
            headers={"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"},
            body=json.dumps({"package": package, **extra}).encode(),
        )
        assert status == 202, body
        answer: dict[str, Any] = body
        return answer

    def build(self, id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.fleet.controller.get(f"/api/v1/test-build/{id}")
        return found

    def wait_state(self, id: str, *states: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            lambda: (b := self.build(id))["state"] in states and b,
            timeout=BUILD_TIMEOUT,
            interval=0.2,
            what=f"test build {id} {' or '.join(states)}",
        )
        return found

    @property
    def drone(self) -> pfx.Prefix:
        """The drone's Gentoo prefix: its installed packages are its vdb."""
        return pfx.Prefix(self.fleet.root / f"{DRONE}-prefix")

    def admin_view(self, id: str) -> dict[str, Any]:
        builds = admin(self.fleet, "GET", "/admin/api/test-builds")["builds"]
        return next(b for b in builds if b["id"] == id)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    inbox = Inbox()
    smtp = SmtpController(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    hook = Webhook()
    try:
        fleet = start_fleet(
            tmp_path_factory.mktemp("testbuilds"),
            (),
            "--smtp-url",
            f"smtp://127.0.0.1:{smtp.port}",
            "--smtp-from",
            "swarm@ctl.test",
            "--test-build-webhook-hosts",
            "127.0.0.1",
            portage=True,
            heartbeat_interval=1.0,
        )
        try:
            fleet.add_agent(DRONE, package_env={"swarm-test/sleeper": {"SWARM_TEST_SLEEP": str(SLEEP)}})
            fleet.wait_online(DRONE)
            token = admin(
                fleet,
                "POST",
                "/admin/api/test-build-tokens",
                {"user": "alice", "rate": "100/h", "burst": 20, "max_queued": 10},
            )
            yield Swarm(fleet, inbox, hook, token["secret"])
        finally:
            fleet.stop()
    finally:
        hook.close()
        smtp.stop()


def get_with_headers(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_a_test_build_lands_in_the_test_binhost_never_staging_and_its_user_is_told(swarm: Swarm) -> None:
    asked = swarm.submit("swarm-test/leaf-hello", notify="alice@example.org", webhook=swarm.hook.url)
    done = swarm.wait_state(asked["id"], "succeeded", "failed")
    assert done["state"] == "succeeded", done
    assert done["drone"] == DRONE and done["exit_code"] == 0 and done["packages"], done
    ctl = swarm.fleet.controller

    # In the test binhost, with its own index, served with the warning.
    [package] = done["packages"]
    assert "/binhost/test/swarm-test/leaf-hello/leaf-hello-1" in package, package
    status, headers, index = get_with_headers(ctl.public_url + "/binhost/test/Packages")
    assert status == 200 and b"CPV: swarm-test/leaf-hello-1" in index
    assert "untested" in headers["X-Build-Swarm-Warning"]
    path = package[package.index("/binhost/test/") :]
    status, headers, data = get_with_headers(ctl.public_url + path)
    assert status == 200 and data[:5] and "never released" in headers["X-Build-Swarm-Warning"]

    # Never in staging: a stock Portage client of staging cannot install it,
    # and the drone's own PKGDIR (later builds' --usepkg) never had it.
    status, staging_index = http("GET", ctl.info["staging_url"] + "/Packages")
    assert status == 404 or "leaf-hello" not in staging_index  # 404: staging has no index yet
    client = pfx.create_prefix(
        pfx.PrefixConfig(swarm.fleet.root / "client", pfx.Role.CLIENT, binhost=ctl.info["staging_url"])
    )
    result = pfx.run_emerge(client, "--getbinpkgonly", "swarm-test/leaf-hello", timeout=120)
    assert not result.ok and not client.installed("swarm-test/leaf-hello-1"), result.output[-2000:]
    assert swarm.fleet.drone_packages(DRONE, "swarm-test/leaf-hello-1") == []
    # Built, never installed: the drone's root is as it was (its vdb has no entry).
    assert not swarm.drone.installed("swarm-test/leaf-hello-1")

    # The log, whole and followed (it has ended: follow answers all of it and closes).
    status, text = http("GET", ctl.public_url + f"/api/v1/test-build/{asked['id']}/log")
    assert status == 200 and ">>> Emerging" in text and "leaf-hello" in text
    assert "building its binary package without installing it (emerge --buildpkgonly)" in text
    status, followed = http("GET", ctl.public_url + f"/api/v1/test-build/{asked['id']}/log?follow=1")
    assert status == 200 and followed == text

    # The email and the webhook, each once, and the record says so.
    mail = wait_for(
        lambda: next((m for m in swarm.inbox.messages if asked["id"] in m["Subject"]), None),
        timeout=30,
        what="the email",
    )
    assert mail["To"] == "alice@example.org" and "succeeded" in mail["Subject"]
    body = mail.get_payload()
    assert isinstance(body, str)
    assert f"/api/v1/test-build/{asked['id']}/log" in body and "/binhost/test/" in body
    posted = wait_for(
        lambda: [p for p in swarm.hook.received if p.get("id") == asked["id"]], timeout=30, what="the POST"
    )
    assert [p["state"] for p in posted] == ["succeeded"] and posted[0]["links"]["log"].endswith("/log")
    wait_for(lambda: swarm.admin_view(asked["id"])["notified"] == "sent", timeout=30, what="notified")


def test_a_test_build_installs_only_its_build_dependencies_and_only_from_staging(swarm: Swarm) -> None:
    # chain-b reads chain-a's file at build time; chain-a is in staging, not on the drone.
    swarm.fleet.stage_packages("swarm-test/chain-a-1")
    [staged] = (swarm.fleet.staging_pkgdir / "swarm-test" / "chain-a").glob("chain-a-1-*.gpkg.tar")
    asked = swarm.submit("swarm-test/chain-b")
    done = swarm.wait_state(asked["id"], "succeeded", "failed")
    assert done["state"] == "succeeded" and done["packages"], done
    assert "/binhost/test/swarm-test/chain-b/chain-b-1" in done["packages"][0]
    # chain-a was merged from staging's binary (the vdb keeps the merged package's MD5);
    # chain-b was built against it and not installed; neither is in the drone's own PKGDIR.
    vdb = swarm.drone.vdb / "swarm-test" / "chain-a-1"
    assert (vdb / "BINPKGMD5").read_text().strip() == hashlib.md5(staged.read_bytes()).hexdigest()
    assert not swarm.drone.installed("swarm-test/chain-b-1")
    assert swarm.fleet.drone_packages(DRONE, "swarm-test/chain-a-1") == []
    assert swarm.fleet.drone_packages(DRONE, "swarm-test/chain-b-1") == []

    # chain-c needs chain-b, which a test build never puts in staging: refused
    # before anything is built or installed, saying which dependency is missing.
    refused = swarm.submit("swarm-test/chain-c")
    failed = swarm.wait_state(refused["id"], "succeeded", "failed")
    assert failed["state"] == "failed" and failed["packages"] == [], failed
    assert failed["reason"].startswith("dependency swarm-test/chain-b-1 is not in staging"), failed
    assert not swarm.drone.installed("swarm-test/chain-b-1")
    assert not swarm.drone.installed("swarm-test/chain-c-1")
    status, text = http("GET", swarm.fleet.controller.public_url + f"/api/v1/test-build/{refused['id']}/log")
    assert status == 200 and "[ebuild" in text and ">>> Emerging" not in text


def test_a_broken_package_fails_with_its_log(swarm: Swarm) -> None:
    asked = swarm.submit("swarm-test/broken", webhook=swarm.hook.url)
    done = swarm.wait_state(asked["id"], "succeeded", "failed")
    assert done["state"] == "failed" and done["exit_code"] not in (None, 0), done
    assert "fails in src_compile on purpose" in done["log_tail"], done
    assert done["reason"] and done["packages"] == []
    status, text = http("GET", swarm.fleet.controller.public_url + f"/api/v1/test-build/{asked['id']}/log")
    assert status == 200 and "fails in src_compile on purpose" in text
    # The admin tier answers the same (swarm-cli testbuild log, the console).
    assert swarm.fleet.controller.admin("GET", f"/admin/api/test-builds/{asked['id']}/log") == (200, text)
    posted = wait_for(
        lambda: [p for p in swarm.hook.received if p.get("id") == asked["id"]], timeout=30, what="the POST"
    )
    assert posted[0]["state"] == "failed" and posted[0]["reason"] == done["reason"]


def test_an_admins_cancel_stops_the_step_that_runs_and_leaves_nothing_on_the_drone(swarm: Swarm) -> None:
    asked = swarm.submit("swarm-test/sleeper")
    agent = psutil.Process(swarm.fleet.agents[DRONE].pid)

    def sleeping() -> psutil.Process | None:
        with contextlib.suppress(psutil.Error):
            for child in agent.children(recursive=True):
                if child.cmdline() == ["sleep", str(SLEEP)]:
                    return child
        return None

    # The last step, the build, sleeps in src_compile; the sleep is held still
    # (SIGSTOP) so that the build cannot end before the cancel reaches it. TERM
    # does not end the step then (ebuild.sh runs its TERM trap once the sleep
    # ends, and a stopped process keeps its TERM pending): the agent KILLs the
    # step's process group after its grace.
    sleep = wait_for(sleeping, timeout=BUILD_TIMEOUT, interval=0.02, what="the sleeper's build step")
    sleep.suspend()
    try:
        admin(swarm.fleet, "POST", f"/admin/api/test-builds/{asked['id']}/cancel")
        done = swarm.wait_state(asked["id"], "cancelled", "succeeded", "failed")
    finally:
        with contextlib.suppress(psutil.Error):
            sleep.resume()
    assert done["state"] == "cancelled" and done["packages"] == [], done
    # Killed with its step's process group; nothing installed, no scratch PKGDIR left.
    wait_for(
        lambda: not sleep.is_running() or sleep.status() == psutil.STATUS_ZOMBIE,
        timeout=30,
        what="the sleep killed",
    )
    assert not swarm.drone.installed("swarm-test/sleeper-1")
    scratch = swarm.fleet.agents[DRONE].state_dir / "test-pkgdirs"
    wait_for(
        lambda: not scratch.exists() or not any(scratch.iterdir()),
        timeout=30,
        what="the scratch PKGDIR deleted",
    )


def test_a_regular_session_started_while_test_builds_wait_goes_first(swarm: Swarm) -> None:
    # The one drone busy with a test build; another test build waits, then a session is queued.
    busy = swarm.submit("swarm-test/sleeper")
    swarm.wait_state(busy["id"], "running")
    # Its log followed from now on: the answer goes on until the build ends.
    log_url = swarm.fleet.controller.public_url + f"/api/v1/test-build/{busy['id']}/log"
    followed: list[tuple[int, Any]] = []
    follower = threading.Thread(target=lambda: followed.append(http("GET", log_url + "?follow=1")))
    follower.start()
    waiting = swarm.submit("swarm-test/leaf-data")
    session = swarm.fleet.queue("swarm-test/leaf-script")["session"]["id"]
    assert swarm.build(waiting["id"])["state"] == "queued"

    swarm.fleet.wait_complete(session, timeout=BUILD_TIMEOUT)
    later = swarm.wait_state(waiting["id"], "succeeded", "failed")
    first = swarm.wait_state(busy["id"], "succeeded", "failed")
    job = swarm.fleet.jobs()["swarm-test/leaf-script-1"]
    assert first["state"] == later["state"] == "succeeded" and job["state"] == "done"
    # The regular job went to the drone the sleeper freed; the waiting test build after it.
    assert first["finished_at"] <= job["started_at"] < later["started_at"], (first, job, later)

    follower.join(30)
    [(status, text)] = followed
    assert status == 200 and f"Sleeping {SLEEP}s" in text and text == http("GET", log_url)[1]
