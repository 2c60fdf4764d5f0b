"""The healer's waits, in process with a clock the test moves
(fakes/clock.py): the cool-off (a per-drone backoff), the startup grace,
and the hold while most of the fleet is dark. The real fleet, event log
and store (SQLite) are used; drones are control streams that only record
what they are sent (fakes/links.py), and step 1 for a drone without a
stream runs a real local command (``true``). tests/test_healing.py proves
the ladder end to end with real agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from swarm.clock import iso, parse_iso
from swarm.controller.alerts import Alerter
from swarm.controller.config import ControllerConfig
from swarm.controller.errors import FailedPrecondition
from swarm.controller.events import EventLog
from swarm.controller.fleet import DroneState, Fleet
from swarm.controller.healer import FIGURES_TTL, TICK, Healer, HealSettings, StartupGrace
from swarm.controller.oob import SshSettings
from swarm.controller.store.records import AccessRecord, IncidentRecord, NodeRecord
from swarm.controller.store.runner import StoreRunner
from swarm.controller.store.sql import SqlStore
from swarm.controller.web.views.base import plain
from swarm.controller.web.views.healing import drone_health_view

from fakes.clock import ManualClock, counting
from fakes.links import FakeLink, connect

pytestmark = pytest.mark.timeout(60)

GRACE = 3.0
STARTUP_GRACE = 30.0
SETTINGS = HealSettings(
    grace=GRACE,
    restart_timeout=6.0,
    hard_restart_timeout=15.0,
    reboot_timeout=180.0,
    command_timeout=10.0,
    cooloff=10.0,
    cooloff_max=40.0,
    cooloff_reset=600.0,
    dark_share=0.5,
    dark_window=30.0,
    dark_min_fleet=3,
    max_actions=100,
    action_window=300.0,
    startup_grace=STARTUP_GRACE,
    restart_command="true",
    hard_restart_command="true",
    ssh=SshSettings(),
)


@dataclass
class Rig:
    fleet: Fleet
    events: EventLog
    healer: Healer
    clock: ManualClock
    links: dict[str, FakeLink] = field(default_factory=dict)

    def drone(self, name: str) -> DroneState:
        state = self.fleet.find(name)
        assert state is not None, name
        return state

    def connect(self, name: str, instance: str = "") -> None:
        """A fresh agent process (``instance``) connects and answers its first ping."""
        _state, self.links[name] = connect(self.fleet, name, instance)

    def kill(self, name: str) -> None:
        self.fleet.detach(self.links[name], "killed")

    async def run(self, seconds: float = 0.0) -> None:
        """Move the clock, let the healer take a pass, and wait for what it started."""
        await self.clock.advance(seconds)
        self.healer.tick(self.clock.time())
        deadline = time.monotonic() + 10
        while self.healer.steps_running:
            assert time.monotonic() < deadline, "a healing step did not finish"
            await asyncio.sleep(0.005)

    async def waiting(self) -> None:
        """Until the healer's loop waits on the clock again (after a pass)."""
        deadline = time.monotonic() + 10
        while not self.clock.pending:
            assert time.monotonic() < deadline, "the healer's loop did not wait again"
            await asyncio.sleep(0.005)

    def actions(self, name: str) -> list[dict[str, Any]]:
        found = self.events.recent(
            after_id=None, since_ts=None, limit=1000, drone_id=self.drone(name).id, types=("heal_action",)
        )
        assert found is not None
        return [e.data for e in found]

    def recorded(self, type: str) -> list[dict[str, Any]]:
        """The data of the fleet-wide events of that type, oldest first."""
        found = self.events.recent(after_id=None, since_ts=None, limit=1000, drone_id=None, types=(type,))
        assert found is not None
        return [e.data for e in sorted(found, key=lambda e: e.id)]

    def health(self, name: str) -> dict[str, Any]:
        """The drone's health as GET /admin/api/drones/{name}/health shows it."""
        found = self.healer.status(self.drone(name), self.clock.time())
        return cast(dict[str, Any], plain(drone_health_view(found, [], [])))

    def next_step_at(self, name: str) -> tuple[float, str]:
        upcoming = self.health(name)["next_action"]
        assert upcoming is not None, self.health(name)
        return parse_iso(upcoming["at"]), upcoming["waiting_for"]


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    known: tuple[str, ...] = (),
    open_incident: str | None = None,
    settings: HealSettings = SETTINGS,
) -> AsyncIterator[Rig]:
    """A healer started with ``known`` drones in the store (a controller
    restart) or none (a first start), and ``open_incident`` for one of them."""
    store = SqlStore(f"sqlite:///{tmp_path}/healer.db")
    runner = StoreRunner(store)
    await runner.open()
    events = EventLog(runner, buffer=1000, retention=1000)
    clock = ManualClock()
    fleet = Fleet(events, y_threshold=8.0, clock=clock)
    records = [
        NodeRecord(id=name.ljust(32, "0"), name=name, first_seen_at=clock.time() - 3600) for name in known
    ]
    fleet.load(records)
    for record in records:
        await runner.call(store.put_access, AccessRecord(record.id, ssh="local"))
    if open_incident is not None:
        drone_id = open_incident.ljust(32, "0")
        incident = IncidentRecord(
            "i-before", drone_id, "offline", "stream ended", clock.time() - 60, clock.time() - 60
        )
        await runner.call(store.upsert_incidents, [incident])
    healer = Healer(fleet, events, runner, Alerter(""), settings, clock=clock)
    await healer.start()
    made = Rig(fleet, events, healer, clock)
    try:
        yield made
    finally:
        await healer.stop()
        await runner.close()


async def new_drone(r: Rig, name: str) -> None:
    r.connect(name)
    # Step 1 for a drone without a stream runs on this machine.
    await r.healer.put_access(AccessRecord(r.drone(name).id, ssh="local"))
    await r.run()


def test_the_cool_off_starts_short_doubles_to_its_cap_and_starts_over_after_a_healthy_while(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await new_drone(r, "crashy")
            # The first incident waits for the grace period only.
            r.kill("crashy")
            await r.run()
            killed = r.clock.time()
            assert r.next_step_at("crashy") == pytest.approx((killed + GRACE, "grace"), abs=0.002)
            await r.run(GRACE - 0.1)
            assert r.actions("crashy") == []
            await r.run(0.1)
            [action] = r.actions("crashy")
            assert action["step"] == "restart" and action["exit_code"] == 0
            last_action = r.clock.time()
            r.connect("crashy")
            await r.run()
            assert r.health("crashy")["incident"] is None

            # It keeps crashing a second after each recovery: 10 s, 20 s, 40 s, 40 s.
            for in_a_row, wait in enumerate((10.0, 20.0, 40.0, 40.0), start=1):
                cooloff = r.health("crashy")["cooloff"]
                assert (cooloff["incidents_in_a_row"], cooloff["current_s"]) == (in_a_row, wait)
                assert parse_iso(cooloff["until"]) == pytest.approx(last_action + wait, abs=0.002)
                await r.run(1.0)
                r.kill("crashy")
                await r.run()
                assert r.next_step_at("crashy") == pytest.approx((last_action + wait, "cool-off"), abs=0.002)
                await r.run(last_action + wait - r.clock.time() - 0.1)
                assert len(r.actions("crashy")) == in_a_row
                await r.run(0.1)
                assert len(r.actions("crashy")) == in_a_row + 1
                last_action = r.clock.time()
                r.connect("crashy")
                await r.run()
                assert r.health("crashy")["incident"] is None

            # Healthy for the reset period: the next crash waits for the grace period only.
            cooloff = r.health("crashy")["cooloff"]
            assert parse_iso(cooloff["resets_at"]) == pytest.approx(r.clock.time() + 600, abs=0.002)
            await r.run(599.0)
            assert r.health("crashy")["cooloff"]["incidents_in_a_row"] == 5
            await r.run(1.0)
            health = r.health("crashy")
            assert health["cooloff"] | {"last_action_at": None} == {
                "incidents_in_a_row": 0,
                "current_s": 0.0,
                "last_action_at": None,
                "until": None,
                "resets_at": None,
            }
            assert "the cool-off starts over" in health["history"][-1]["what"]
            r.kill("crashy")
            await r.run()
            assert r.next_step_at("crashy") == pytest.approx((r.clock.time() + GRACE, "grace"), abs=0.002)

    asyncio.run(scenario())


def test_a_drone_that_recovers_by_itself_does_not_grow_its_cool_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await new_drone(r, "blip")
            for _ in range(3):
                r.kill("blip")
                await r.run(1.0)
                r.connect("blip")  # back within the grace period
                await r.run()
            assert r.actions("blip") == []
            assert r.health("blip")["cooloff"]["incidents_in_a_row"] == 0
            r.kill("blip")
            await r.run()
            assert r.next_step_at("blip")[1] == "grace"

    asyncio.run(scenario())


def test_a_first_start_has_no_startup_grace(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            assert r.healer.startup_grace(r.clock.time()) is None
            await new_drone(r, "fresh")
            await r.run(10.0)  # killed 10 s after the start
            r.kill("fresh")
            await r.run()
            assert r.next_step_at("fresh") == pytest.approx((r.clock.time() + GRACE, "grace"), abs=0.002)
            await r.run(GRACE)
            assert [a["step"] for a in r.actions("fresh")] == ["restart"]

    asyncio.run(scenario())


def test_a_well_fleet_wakes_the_healer_only_for_its_figures_and_a_change_of_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every drone is well the healer's loop sleeps until the public
    figures are due again (every FIGURES_TTL), not every TICK; a drone going
    offline wakes it at once, and its incident has a pass every TICK."""

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await new_drone(r, "well")
            await r.clock.advance(1.0)  # a pass finds it well: no longer watched
            passes: list[float] = []
            monkeypatch.setattr(r.healer, "tick", counting(passes, r.healer.tick))
            for _ in range(120):
                await r.clock.advance(0.5)
                await r.waiting()  # a pass reads the store in its thread, in real time
            assert 60 / FIGURES_TTL - 1 <= len(passes) <= 60 / FIGURES_TTL + 1, passes
            passes.clear()
            r.kill("well")
            await r.clock.advance(0.0)  # no time passes: the change of status woke it
            assert passes == [r.clock.time()]
            await r.waiting()  # (the pass writes the incident)
            for _ in range(8):  # an incident is open: a pass every TICK while it lasts
                await r.clock.advance(TICK)
                await r.waiting()
            assert len(passes) == 1 + 8

    asyncio.run(scenario())


def test_the_startup_grace_ends_when_every_known_drone_is_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, known=("d1", "d2")) as r:
            started = r.clock.time()
            grace = r.healer.startup_grace(started)
            assert grace is not None and grace.awaiting == ("d1", "d2")
            assert grace.until == pytest.approx(started + STARTUP_GRACE, abs=0.002)
            await r.run(5.0)
            # Not back yet: no incident, not healed, and its health view says why.
            assert r.health("d1")["incident"] is None and r.actions("d1") == []
            assert r.health("d1")["startup_grace_until"] == iso(grace.until)
            r.connect("d1")
            await r.run(1.0)
            assert r.healer.startup_grace(r.clock.time()) == StartupGrace(grace.until, ("d2",))
            # A drone that is back is healed as usual meanwhile.
            r.kill("d1")
            await r.run()
            assert r.next_step_at("d1") == pytest.approx((r.clock.time() + GRACE, "grace"), abs=0.002)
            await r.run(GRACE)
            assert [a["step"] for a in r.actions("d1")] == ["restart"]
            assert r.actions("d2") == [] and r.health("d2")["incident"] is None
            r.connect("d2")
            await r.run()
            assert r.healer.startup_grace(r.clock.time()) is None
            assert r.health("d2")["startup_grace_until"] is None
            # Gone again, 10 s after the start: its first step after the grace period only.
            r.kill("d2")
            await r.run()
            assert r.clock.time() - started < STARTUP_GRACE / 2
            assert r.next_step_at("d2") == pytest.approx((r.clock.time() + GRACE, "grace"), abs=0.002)

    asyncio.run(scenario())


def test_the_startup_grace_ends_at_its_timeout_for_drones_that_stay_away(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, known=("back", "away", "hurt"), open_incident="hurt") as r:
            started = r.clock.time()
            r.connect("back")
            await r.run(STARTUP_GRACE - 0.1)
            # An incident from before the start waits too, and says so.
            upcoming = r.health("hurt")["next_action"]
            assert upcoming["waiting_for"] == "startup grace"
            assert parse_iso(upcoming["at"]) == pytest.approx(started + STARTUP_GRACE, abs=0.002)
            assert r.health("away")["incident"] is None
            assert r.actions("away") == [] and r.actions("hurt") == []
            await r.run(0.1)
            assert r.healer.startup_grace(r.clock.time()) is None
            # The incident from before the start goes on at once; a new one gets the grace period.
            assert [a["step"] for a in r.actions("hurt")] == ["restart"]
            assert r.health("away")["incident"]["kind"] == "offline"
            assert r.next_step_at("away") == pytest.approx((r.clock.time() + GRACE, "grace"), abs=0.002)
            await r.run(GRACE)
            assert [a["step"] for a in r.actions("away")] == ["restart"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"heal_cooloff": 600.0}, "heal_cooloff_max (300) must be at least heal_cooloff (600)"),
        ({"heal_cooloff": -1.0}, "heal_cooloff and heal_startup_grace must not be negative"),
        ({"heal_cooloff_reset": 0.0}, "heal_cooloff_reset must be positive"),
    ],
)
def test_bad_cool_off_settings_are_refused(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        ControllerConfig(**values)


def test_an_old_flat_cool_off_setting_is_now_the_first_wait() -> None:
    config = ControllerConfig(heal_cooloff=60.0)
    assert (config.heal_cooloff, config.heal_cooloff_max, config.heal_cooloff_reset) == (60.0, 300.0, 600.0)


def test_a_drone_that_leaves_its_pings_unanswered_is_healed_like_one_failing_a_check(tmp_path: Path) -> None:
    """Its heartbeats arrive, but it reads nothing: after --missed-pings it is
    unhealthy, and after the grace the healer's first step restarts its agent."""

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await new_drone(r, "deaf")
            state = r.drone("deaf")
            for seq in range(100, 100 + r.fleet.missed_pings + 1):
                r.fleet.on_ping_sent(state, seq, r.clock.time_ns())
            assert state.status == "unhealthy"
            assert [c.name for c in state.failing] == ["pings"]
            await r.run()
            await r.run(GRACE)
            [action] = r.actions("deaf")
            assert action["step"] == "restart"
            sent = [m.WhichOneof("body") for m in r.links["deaf"].sent]
            assert "restart_service" in sent

    asyncio.run(scenario())


def test_an_admins_restart_waits_for_the_healers_step_and_counts_against_its_budget(tmp_path: Path) -> None:
    """One action at a time per drone: while the ladder's step runs, and
    while it waits to see the drone back, an admin's restart is refused
    with the reason; and so is one beyond --heal-max-actions."""
    # Step 1 without a stream runs a real local command that takes a moment.
    settings = dataclasses.replace(SETTINGS, restart_command="sleep 0.5", max_actions=2)

    async def scenario() -> None:
        async with rig(tmp_path, settings=settings) as r:
            await new_drone(r, "busy")
            r.kill("busy")
            await r.run()
            await r.clock.advance(GRACE)
            r.healer.tick(r.clock.time())
            assert r.healer.steps_running == 1
            with pytest.raises(FailedPrecondition, match="the healer's restart is running; one action at a"):
                await r.healer.restart(r.drone("busy"), "admin")
            await r.run()
            with pytest.raises(
                FailedPrecondition, match=r"the healer's restart is under way .* to come back"
            ):
                await r.healer.restart(r.drone("busy"), "admin")
            assert r.health("busy")["busy"].startswith("the healer's restart is under way")

            r.connect("busy", instance="second")
            await r.run()
            assert r.health("busy")["incident"] is None and r.health("busy")["busy"] is None
            # Connected: asked over the stream; until a fresh agent is back, no second one.
            result = await r.healer.restart(r.drone("busy"), "admin")
            assert result.done and "control stream" in result.detail
            with pytest.raises(FailedPrecondition, match="a restart asked by admin is under way"):
                await r.healer.restart(r.drone("busy"), "admin")
            r.connect("busy", instance="third")
            assert r.health("busy")["busy"] is None
            # Two actions in the window (the ladder's and the admin's): the budget is spent.
            spent = r"the healing budget is spent \(2 actions within 300s"
            with pytest.raises(FailedPrecondition, match=spent):
                await r.healer.restart(r.drone("busy"), "admin")
            await r.run(settings.action_window)
            assert (await r.healer.restart(r.drone("busy"), "admin")).done
            assert [a["why"] for a in r.actions("busy")] == [
                "healing ladder",
                "restart asked by admin",
                "restart asked by admin",
            ]

    asyncio.run(scenario())


def test_the_healer_waits_for_an_admins_restart_before_its_own_step(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await new_drone(r, "asked")
            r.kill("asked")
            await r.run()
            # Within the grace period the admin restarts it (over SSH: it has no stream).
            result = await r.healer.restart(r.drone("asked"), "admin")
            assert result.done and result.command is not None and result.command.ok
            # The grace period ends, but the admin's restart has its step timeout to work.
            await r.run(GRACE)
            assert len(r.actions("asked")) == 1
            assert r.health("asked")["busy"].startswith("a restart asked by admin is under way")
            await r.run(SETTINGS.restart_timeout - GRACE)
            # It did not bring the drone back: the ladder goes on.
            assert [a["why"] for a in r.actions("asked")] == ["restart asked by admin", "healing ladder"]

    asyncio.run(scenario())


def test_most_of_the_fleet_going_dark_holds_the_healer_until_it_is_back(tmp_path: Path) -> None:
    """More than dark_share of the fleet gone within dark_window: the
    controller's own network is the likelier fault, so nothing is healed
    until they are back; those still away then get a fresh grace period."""

    async def scenario() -> None:
        async with rig(tmp_path) as r:
            for name in ("d1", "d2", "d3"):
                await new_drone(r, name)
            r.kill("d1")
            r.kill("d2")
            await r.run()
            [dark] = r.recorded("fleet_dark")
            assert dark["drones"] == ["d1", "d2"] and r.healer.dark
            for name in ("d1", "d2"):
                upcoming = r.health(name)["next_action"]
                assert upcoming["held"] == "fleet dark", upcoming
            # Long past their first step: held, not healed.
            await r.run(GRACE + SETTINGS.dark_window)
            assert r.actions("d1") == [] and r.actions("d2") == []
            assert r.health("d1")["next_action"]["held"] == "fleet dark"

            # d1 is back (it was the network): one of three away is no longer most of the fleet.
            r.connect("d1")
            await r.run()
            assert not r.healer.dark and [e["fleet"] for e in r.recorded("fleet_dark_cleared")] == [3]
            assert r.health("d1")["incident"] is None
            assert r.health("d1")["history"][-1]["what"].startswith("recovered by itself in ")
            # d2 may be on its way back too: its first step waits a fresh grace period.
            assert r.next_step_at("d2") == pytest.approx((r.clock.time() + GRACE, "grace"), abs=0.002)
            await r.run(GRACE - 0.1)
            assert r.actions("d2") == []
            await r.run(0.1)
            assert [a["step"] for a in r.actions("d2")] == ["restart"]

    asyncio.run(scenario())
