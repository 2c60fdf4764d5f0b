"""--release-schedule and --auto-promote-after against a real controller's
releases and build sessions: the slot waits for a running session, a cut
the core refuses is skipped with its reason, a cut nobody objected to is
promoted, and an admin's action or a deleted release holds it.

One controller for the module (in this process), its staging a Portage
prefix's PKGDIR that packages reach through the real upload path
(tools/gpkgs.py writes them with Portage's gpkg code). The schedule under
test runs on the controller's loop with a manual clock of its own (the
controller's other loops keep real time: a day moved at once would wake
them hundreds of thousands of times): daily:03:00, auto-promote after an
hour, from 01:00 local time. Each test moves it to the next slot it needs,
so each starts from whatever releases the tests before it left and says
what it expects of them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import prefix as prefixes
import pytest

from swarm.controller.release_cadence import WEEKDAYS, parse_schedule
from swarm.controller.release_schedule import STATE_FILE, ReleaseSchedule
from swarm.controller.releases import Releases
from swarm.files import sha256_file

from fakes.clock import ManualClock
from support.cli import run_here
from support.inproc import InProcessController, local_config
from support.procs import wait_for

pytestmark = [
    pytest.mark.timeout(120),
    # aiohttp warns of the admin tier's string request keys (as in test_admin_auth).
]

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 12, 7, 1, 0).timestamp()  # local time, two hours before the slot
DAY = 86400.0
HOUR = 3600.0


class Swarm:
    def __init__(
        self, ctl: InProcessController, clock: ManualClock, prefix: prefixes.Prefix, state_dir: Path
    ) -> None:
        self.ctl = ctl
        self.clock = clock
        self.prefix = prefix
        self.state_dir = state_dir
        self.builds = 0
        self.schedule = self.new_schedule()

    @property
    def releases(self) -> Releases:
        releases = self.ctl.controller.releases
        assert releases is not None
        return releases

    def new_schedule(self) -> ReleaseSchedule:
        """Started on the controller's loop; the caller stops it."""
        controller = self.ctl.controller
        schedule = ReleaseSchedule(
            self.releases,
            controller.builds,
            controller.events,
            self.state_dir,
            cadence=parse_schedule("daily:03:00"),
            auto_promote_after=HOUR,
            clock=self.clock,
        )
        self.ctl.run(schedule.start)
        self.idle()
        return schedule

    def advance(self, seconds: float) -> None:
        """Move the schedule's clock, then wait for what that made due (a cut
        signs and links in threads, in real time) to end: the schedule is
        idle again once it waits on its clock."""
        self.ctl.run(lambda: self.clock.advance(seconds), timeout=60)
        self.idle()

    def idle(self) -> None:
        wait_for(lambda: self.clock.pending > 0, timeout=60, what="the schedule waiting on its clock again")

    def to_next_slot(self) -> None:
        """Just past the next 03:00."""
        slot = self.schedule.status().next_cut_at
        assert slot is not None
        self.advance(slot - self.clock.time() + 1)

    def versions(self) -> list[str]:
        return self.ctl.call(lambda: [r.version for r in self.releases.list_all()])

    def current(self) -> str | None:
        return self.ctl.call(self.releases.current)

    def events(self, type_: str) -> list[dict[str, Any]]:
        return self.ctl.events(type=type_)

    def stage(self, cpv: str, tmp: Path) -> None:
        """Upload ``cpv`` into staging as a drone does (chunks, CRC, sha256)."""
        out = tmp / cpv.replace("/", "_")
        out.mkdir()
        made = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "gpkgs.py"), "--out", str(out), cpv],
            env=self.prefix.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        path = Path(json.loads(made.stdout)["files"][0])
        data = path.read_bytes()
        staging = self.ctl.controller.staging
        assert staging is not None
        self.builds += 1

        async def chunks() -> AsyncIterator[tuple[int, bytes, int]]:
            yield 0, data, zlib.crc32(data)

        digest = sha256_file(path)[0]
        build_id = f"b-schedule-{self.builds}"
        received = self.ctl.run(
            lambda: staging.receive(build_id, cpv, path.name, len(data), digest, chunks()), timeout=60
        )
        assert received == (len(data), True)

    def queue(self, *atoms: str) -> dict[str, Any]:
        status, reply = self.ctl.admin(
            "POST", "/admin/api/queue", json.dumps({"atoms": list(atoms)}).encode()
        )
        assert status == 201, reply
        return dict(reply)

    def control(self, action: str) -> None:
        status, reply = self.ctl.admin("POST", "/admin/api/control", json.dumps({"action": action}).encode())
        assert status == 200, reply


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    root = tmp_path_factory.mktemp("schedule")
    prefix = prefixes.create_prefix(prefixes.PrefixConfig(root / "prefix", prefixes.Role.CONTROLLER))
    # The controller's own schedule: wired from its options, a day away at least.
    weekday = WEEKDAYS[(datetime.now().weekday() + 2) % 7]
    config = local_config(
        root,
        portage_eprefix=prefix.root,
        release_schedule=f"weekly:{weekday}:03:00",
        auto_promote_after="2d",
    )
    ctl = InProcessController(config).start()
    swarm: Swarm | None = None
    try:
        # Cuts and the schedule's saves run in the loop's default executor, which
        # starts its threads as work overlaps, up to its maximum: all of them now,
        # so that none appears during a test as a leaked thread.
        ctl.run(lambda: asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(64))))
        state = root / "schedule-under-test"
        state.mkdir()
        swarm = Swarm(ctl, ManualClock(start=START), prefix, state)
        yield swarm
    finally:
        if swarm is not None:
            ctl.run(swarm.schedule.stop)
        ctl.stop()


def test_the_controller_runs_the_schedule_its_options_name(swarm: Swarm) -> None:
    own = swarm.ctl.controller.release_schedule
    assert own is not None
    status = own.status()
    assert status.schedule.startswith("weekly:") and status.auto_promote_after == 2 * DAY
    assert status.next_cut_at is not None
    slot = datetime.fromtimestamp(status.next_cut_at)
    assert (slot.weekday(), slot.hour, slot.minute) == ((datetime.now().weekday() + 2) % 7, 3, 0)
    # The admin tier shows it with the releases (the console's Releases page reads it there).
    code, listing = swarm.ctl.admin("GET", "/admin/api/releases")
    assert code == 200, listing
    shown = listing["schedule"]
    assert shown["schedule"] == status.schedule and shown["auto_promote_after"] == 2 * DAY
    assert datetime.fromisoformat(shown["next_cut_at"]).timestamp() == pytest.approx(
        status.next_cut_at, abs=0.001
    )
    assert shown["waiting_since"] is None and shown["pending"] is None
    key = swarm.ctl.config.admin_key_path
    listed = run_here(swarm.ctl.admin_url, key, "release", "list")
    assert listed.returncode == 0, listed.stderr
    assert (
        f"schedule {status.schedule}; next cut " in listed.stdout
        and "auto-promote after 48 h" in listed.stdout
    )


def test_a_slot_waits_for_the_running_session_and_skips_what_the_core_refuses(swarm: Swarm) -> None:
    # No drone: the session runs until an admin stops it, with leaf-hello unbuilt.
    swarm.queue("swarm-test/leaf-hello")
    before = swarm.versions()
    swarm.to_next_slot()
    waiting = swarm.events("release_schedule_waiting")
    assert len(waiting) == 1 and "waits for session" in waiting[0]["message"]
    assert swarm.schedule.status().waiting_since is not None
    # An hour on, the session still runs: still waiting, said once, nothing cut.
    swarm.advance(HOUR)
    assert len(swarm.events("release_schedule_waiting")) == 1 and swarm.versions() == before

    swarm.control("stop")  # the session ends: the schedule looks at once, not at its next recheck
    swarm.idle()
    skipped = swarm.events("release_schedule_skipped")
    assert len(skipped) == 1, skipped
    assert "swarm-test/leaf-hello-1" in skipped[0]["data"]["reason"]  # what staging lacks
    assert swarm.versions() == before and swarm.schedule.status().waiting_since is None


def test_a_cut_nobody_objects_to_is_promoted_after_the_delay(swarm: Swarm, tmp_path: Path) -> None:
    swarm.stage("swarm-test/leaf-hello-1", tmp_path)  # what the last session needed: it is green now
    swarm.to_next_slot()
    cut = [e for e in swarm.events("release_cut") if e["data"]["by"] == "schedule"]
    assert len(cut) == 1, cut
    version = cut[0]["data"]["version"]
    assert version in swarm.versions() and swarm.current() != version
    pending = swarm.schedule.status().pending
    assert pending is not None and pending.version == version

    swarm.advance(HOUR - 60)
    assert swarm.current() != version
    swarm.advance(61)
    assert swarm.current() == version
    last = swarm.ctl.call(swarm.releases.promotions)[-1]
    assert (last.version, last.action, last.by) == (version, "auto-promote", "schedule")
    assert swarm.schedule.status().pending is None


def test_a_slot_with_nothing_new_is_skipped_with_the_reason(swarm: Swarm) -> None:
    before = swarm.versions()
    skipped = len(swarm.events("release_schedule_skipped"))
    swarm.to_next_slot()
    events = swarm.events("release_schedule_skipped")
    assert len(events) == skipped + 1
    assert "nothing changed" in events[-1]["data"]["reason"]
    assert swarm.versions() == before


def test_an_admin_promotion_since_the_cut_holds_the_scheduled_one(swarm: Swarm, tmp_path: Path) -> None:
    swarm.stage("swarm-test/chain-a-1", tmp_path)
    swarm.to_next_slot()
    scheduled = swarm.schedule.status().pending
    assert scheduled is not None
    # The admin cuts and promotes a release of their own while the scheduled one waits.
    swarm.stage("swarm-test/chain-b-1", tmp_path)
    own = swarm.ctl.run(lambda: swarm.releases.cut(notes="by hand", force=False, by="admin:test"))
    swarm.ctl.run(lambda: swarm.releases.promote(own.version, by="admin:test"))
    swarm.advance(HOUR + 1)
    assert swarm.current() == own.version  # not the scheduled cut
    held = swarm.events("release_auto_promote_cancelled")[-1]
    assert held["data"]["version"] == scheduled.version
    assert held["data"]["reason"] == f"admin:test promoted {own.version} since the cut"


def test_a_deleted_scheduled_cut_is_not_promoted_and_a_restart_keeps_what_is_pending(
    swarm: Swarm, tmp_path: Path
) -> None:
    swarm.stage("swarm-test/chain-c-1", tmp_path)
    swarm.to_next_slot()
    pending = swarm.schedule.status().pending
    assert pending is not None
    current = swarm.current()

    # A schedule started afresh (as after a restart) finds the promotion still due.
    swarm.ctl.run(swarm.schedule.stop)
    state = json.loads((swarm.state_dir / STATE_FILE).read_text())
    assert state["pending"]["version"] == pending.version
    swarm.schedule = swarm.new_schedule()
    assert swarm.schedule.status().pending == pending

    swarm.ctl.run(lambda: swarm.releases.delete(pending.version, by="admin:test"))
    swarm.advance(HOUR + 1)
    assert swarm.current() == current and pending.version not in swarm.versions()
    held = swarm.events("release_auto_promote_cancelled")[-1]
    assert (held["data"]["version"], held["data"]["reason"]) == (pending.version, "deleted")


def test_slots_missed_while_the_controller_was_down_are_made_up_once_at_start(
    swarm: Swarm, tmp_path: Path
) -> None:
    def scheduled_cuts() -> list[str]:
        return [e["data"]["version"] for e in swarm.events("release_cut") if e["data"]["by"] == "schedule"]

    before = scheduled_cuts()
    swarm.ctl.run(swarm.schedule.stop)
    swarm.ctl.run(lambda: swarm.clock.advance(2 * DAY))  # two slots pass with no schedule running
    swarm.stage("swarm-test/chain-d-1", tmp_path)
    swarm.schedule = swarm.new_schedule()
    made_up = scheduled_cuts()
    assert len(made_up) == len(before) + 1 and made_up[-1] in swarm.versions()
    status = swarm.schedule.status()
    assert status.next_cut_at is not None and status.next_cut_at > swarm.clock.time()
