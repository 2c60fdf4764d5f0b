"""The healer: brings sick drones back without a human, and never makes
things worse.

A drone that is offline, suspect (silent) or unhealthy (failing a
functional check) has an open *incident*. After a short grace period (it
may come back by itself) the healer climbs a ladder, one step at a time,
each with a timeout; the success check is the drone online again, which
takes a healthy heartbeat, and after a restart a fresh agent process:

1. restart the agent: over the control stream when it is connected, else
   over SSH (``restart_command``);
2. hard restart over SSH (``hard_restart_command``);
3. reboot the container or VM through its hypervisor host (lxc and qemu
   only, when the admin configured how; bare-metal and unknown: never);
4. alert the admin: an event and a webhook POST.

A step that cannot run (no SSH target, no reboot command) is skipped with
the reason. Success at any step closes the incident and resets the ladder.

Waits, and only where they help:

- the *cool-off*, a per-drone backoff (as Kubernetes backs off a crashing
  container): after the healer acted on a drone, that drone's next
  incident waits ``cooloff`` seconds from the last action before its first
  step; each further incident it acts on in a row doubles the wait, up to
  ``cooloff_max``; once the drone has stayed healthy ``cooloff_reset``
  seconds after an incident, its backoff starts over. A one-off crash is
  healed after the grace period alone; a crash loop is not hammered.
- the *startup grace*: drones the controller knew before it started
  reconnect by themselves after a controller restart, so while some have
  not, those are not healed. It ends when every one of them is back (at
  once on a first start, when none was known), or ``startup_grace`` seconds
  after the start. Drones already back, and new ones, are healed as usual.

Safety: while more than ``dark_share`` of the fleet went dark within
``dark_window`` the healer assumes the fault is the controller's own
network and does nothing (one event), until the fleet is back or the
admin overrides. At most ``max_actions`` actions per ``action_window``
across the fleet. Admins pause healing globally or per drone. Incidents
are recorded either way: they are the availability figures.

An admin's restart or reboot is an action like the ladder's: one at a
time per drone (``busy`` says why another must wait: a step running, the
ladder's step waiting out its timeout, or an admin's action whose drone
has not come back with a fresh agent within that step's timeout), and
each counts against the same ``max_actions``. What cannot run now is
refused (409 with the reason), never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from swarm.clock import SYSTEM, Clock, iso
from swarm.controller import access as oob_access
from swarm.controller.alerts import Alerter
from swarm.controller.errors import FailedPrecondition, InvalidArgument, SwarmError
from swarm.controller.events import EventLog
from swarm.controller.fleet import OFFLINE, ONLINE, SUSPECT, UNHEALTHY, DroneState, Fleet
from swarm.controller.metrics import Metrics, heal_result
from swarm.controller.oob import (
    CommandResult,
    CommandTemplate,
    SshSettings,
    SshTarget,
    reboot_template,
    run,
    ssh_argv,
)
from swarm.controller.store.base import StoreUnavailable
from swarm.controller.store.records import AccessRecord, IncidentRecord
from swarm.controller.store.runner import StoreRunner
from swarm.tasks import TaskSet

log = logging.getLogger(__name__)

SICK = frozenset({OFFLINE, SUSPECT, UNHEALTHY})
RESTART, HARD_RESTART, REBOOT, ALERT = 1, 2, 3, 4
STEPS = {RESTART: "restart", HARD_RESTART: "hard restart", REBOOT: "reboot", ALERT: "alert"}
TICK = 0.25
# A restarting agent ends its stream within half a second or so.
RESTART_ACK = 2.0
HISTORY = 50
PAUSED_KEY = "healing_paused"
DAY = 86400.0
FIGURES_TTL = 5.0  # seconds the public health figures are reused (until an incident is written)


@dataclass(frozen=True, slots=True)
class HealSettings:
    """From the controller's config (app.heal_settings), which holds the defaults."""

    grace: float
    restart_timeout: float
    hard_restart_timeout: float
    reboot_timeout: float
    command_timeout: float
    cooloff: float  # the first wait; doubles per incident in a row
    cooloff_max: float
    cooloff_reset: float  # healthy this long: the backoff starts over
    dark_share: float
    dark_window: float
    dark_min_fleet: int
    max_actions: int
    action_window: float
    startup_grace: float
    restart_command: str
    hard_restart_command: str
    ssh: SshSettings

    def step_timeout(self, level: int) -> float:
        return {RESTART: self.restart_timeout, HARD_RESTART: self.hard_restart_timeout}.get(
            level, self.reboot_timeout
        )

    def backoff(self, strikes: int) -> float:
        """The cool-off after ``strikes`` incidents in a row that the healer acted on."""
        if strikes < 1:
            return 0.0
        # Clamp the exponent so a long crash loop cannot overflow a float.
        return min(self.cooloff_max, self.cooloff * 2.0 ** min(strikes - 1, 64))


@dataclass(frozen=True, slots=True)
class LadderNote:
    """One line of a drone's healing history."""

    at: float
    what: str


@dataclass(frozen=True, slots=True)
class NextAction:
    """The healer's next step on a drone, and what it waits for."""

    step: str
    level: int
    at: float
    waiting_for: str  # grace, cool-off, step timeout, startup grace
    held: str  # why it would not run now: healing paused, fleet dark, running; "" if it would


@dataclass(frozen=True, slots=True)
class Cooloff:
    """Why a new incident would wait: the drone's backoff."""

    incidents_in_a_row: int
    current: float  # seconds
    last_action_at: float | None
    until: float | None
    resets_at: float | None


@dataclass(frozen=True, slots=True)
class DroneHealth:
    """A drone's healing state for the admin: ladder, next action, history."""

    drone: str
    id: str
    status: str
    type: str
    access: AccessRecord
    healing_paused: bool
    fleet_dark: bool
    level: int
    step: str
    exhausted: bool
    incident: IncidentRecord | None
    next_action: NextAction | None
    cooloff: Cooloff
    startup_grace_until: float | None  # not back since the start: not healed before this
    busy: str | None  # why an admin's restart or reboot would be refused now (409)
    history: tuple[LadderNote, ...]


@dataclass(frozen=True, slots=True)
class StartupGrace:
    """While drones known before the start are awaited: until when at the latest, and which."""

    until: float
    awaiting: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """Fleet availability and recovery over ``window_s`` (the last day)."""

    window_s: float
    availability: float | None
    incidents: int
    open_incidents: int
    mttr_s: float | None
    mean_detection_s: float | None
    healing_paused: bool = False
    fleet_dark: bool = False


@dataclass(slots=True)
class Ladder:
    """One drone's healing state."""

    drone_id: str
    incident: IncidentRecord | None = None
    level: int = 0  # the last step taken in the open incident
    step_deadline: float = 0.0
    next_action_at: float = 0.0
    waiting_for: str = "grace"  # what next_action_at waits out: grace, cool-off
    last_action_at: float = 0.0
    # The backoff: incidents in a row the healer acted on, and since when the
    # drone has been healthy (it starts over after cooloff_reset of that).
    strikes: int = 0
    healthy_since: float | None = None
    acting: bool = False
    running: str = ""  # what runs while acting, for people
    # Step 1 over the control stream: that stream, and until when it must end.
    asked: object | None = None
    asked_until: float = 0.0
    # An admin's action that ran: what it was, until when its drone may take
    # to come back, and the agent process it was taken on.
    manual: str = ""
    manual_until: float = 0.0
    manual_instance: str = ""
    # The latest HISTORY notes, oldest first. A tuple remade per note (notes
    # are rare): every drone has a ladder, and an empty deque took 0.7 KB.
    history: tuple[LadderNote, ...] = ()

    def note(self, now: float, what: str) -> None:
        self.history = (*self.history[1 - HISTORY :], LadderNote(now, what))

    @property
    def exhausted(self) -> bool:
        return self.level >= ALERT


@dataclass(frozen=True, slots=True)
class StepResult:
    level: int
    done: bool  # the step ran (its success is still to be seen)
    detail: str
    command: CommandResult | None = None


class Healer:
    def __init__(
        self,
        fleet: Fleet,
        events: EventLog,
        runner: StoreRunner,
        alerter: Alerter,
        settings: HealSettings,
        *,
        file_entries: dict[str, dict[str, Any]] | None = None,
        enrolled: Callable[[str], bool] | None = None,
        clock: Clock = SYSTEM,
        metrics: Metrics | None = None,
    ) -> None:
        self._fleet = fleet
        self._events = events
        self._runner = runner
        self._alerter = alerter
        self.settings = settings
        self._file_entries = dict(file_entries or {})
        self._enrolled = enrolled
        self._clock = clock
        self._metrics = metrics
        self._tasks = TaskSet("healer")
        self._actions = TaskSet("heal-actions")
        self._wake = asyncio.Event()
        self._ladders: dict[str, Ladder] = {}
        self.access: dict[str, AccessRecord] = {}
        self._dirty: set[str] = set()
        self._figures: tuple[float, FleetFigures] | None = None  # (computed at, figures)
        self._figures_due = True  # an incident was written since
        self._closed: list[IncidentRecord] = []  # recovered, to be written
        self._recent_actions: deque[float] = deque()
        self._throttled = False
        self._status_changed_at: dict[str, float] = {}
        self.paused = False
        self.dark = False
        self._dark_overridden = False
        self._started_at = 0.0
        # The startup grace: drones known before the start that are not back yet.
        self._awaited: set[str] = set()
        self._grace_over = False
        # The drones a tick looks at: any whose status changed, until it is
        # well with no incident and no strikes (a tick over the whole fleet,
        # four times a second, cost more than a thousand heartbeats).
        self._watched: set[str] = set()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self._started_at = self._clock.time()
        self._awaited = {
            state.id
            for state in self._fleet.states()
            if state.link is None and (self._enrolled is None or self._enrolled(state.id))
        }
        self._grace_over = not self._awaited  # a first start: none to wait for
        if self._awaited:
            log.info(
                "startup grace: %d known drone(s) get up to %gs to reconnect before they are healed",
                len(self._awaited),
                self.settings.startup_grace,
            )
        store = self._runner.store
        self.access = {a.drone_id: a for a in await self._runner.call(store.list_access)}
        self.paused = (await self._runner.call(store.get_setting, PAUSED_KEY)) == "1"
        for incident in await self._runner.call(store.list_incidents, limit=100_000):
            if incident.recovered_at is None and incident.drone_id not in self._ladders:
                self._ladders[incident.drone_id] = Ladder(
                    incident.drone_id, incident, incident.level, next_action_at=self._started_at
                )
        await self._apply_file()
        await self._refresh_figures()
        self._watched = {state.id for state in self._fleet.states()} | set(self._ladders)
        self._fleet.watchers.append(self._on_status)
        self._tasks.spawn(self._loop(), "ladder")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._fleet.watchers.remove(self._on_status)
        await self._tasks.close()
        await self._actions.close()
        await self._flush()

    @property
    def steps_running(self) -> int:
        return len(self._actions)

    def open_incidents(self) -> int:
        return sum(1 for ladder in self._ladders.values() if ladder.incident is not None)

    def _on_status(self, state: DroneState, old: str, new: str) -> None:
        self._status_changed_at[state.id] = self._clock.time()
        self._watched.add(state.id)
        if state.link is not None:
            self._awaited.discard(state.id)
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._clock.wait(self._wake, self._next_pass_in(self._clock.time()))
            self._wake.clear()
            try:
                await self._apply_file()
                self.tick(self._clock.time())
                await self._flush()
                await self._refresh_figures()
            except StoreUnavailable as exc:
                # The incidents stay to be written; selfcheck.py reports the outage.
                log.debug("healer pass: %s", exc.reason)
            except Exception:
                log.exception("healer pass failed")

    def _next_pass_in(self, now: float) -> float:
        """Seconds to the next pass unless something wakes the loop: TICK while
        a drone is watched (its incident climbs, its cool-off runs out) or
        anything is left to do; a well fleet needs a pass only when a status
        changes (``_on_status`` wakes the loop, as every admin action does)
        and when the public figures are due again. (With the pinger's and the
        health monitor's loops sleeping until a drone is due, schedule.py, a
        controller without drones uses a third to a fifth of what it did.)"""
        busy = (
            self._watched
            or not self._grace_over
            or self._file_entries
            or self._dirty
            or self._closed
            or self.dark
            or self._dark_overridden
            or self._figures is None
            or self._figures_due
        )
        if busy:
            return TICK
        assert self._figures is not None
        return min(FIGURES_TTL, max(TICK, self._figures[0] + FIGURES_TTL - now))

    async def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        incidents = [
            ladder.incident
            for drone_id in dirty
            if (ladder := self._ladders.get(drone_id)) is not None and ladder.incident is not None
        ]
        closed, self._closed = self._closed, []
        if incidents or closed:
            try:
                await self._runner.call(self._runner.store.upsert_incidents, closed + incidents)
            except BaseException:
                # Kept for the next pass (with whatever changed meanwhile), not forgotten.
                self._dirty |= dirty
                self._closed = closed + self._closed
                raise
            self._figures_due = True

    # -- access settings ---------------------------------------------------

    async def _apply_file(self) -> None:
        """File entries for drones known by now (by id or name) go to the store."""
        if not self._file_entries:
            return
        for key in list(self._file_entries):
            state = self._fleet.find(key)
            if state is None:
                continue
            fields = self._file_entries.pop(key)
            record = oob_access.validate(state.id, fields, by="config file")
            old = self.access.get(state.id)
            if old is not None:
                record = replace(record, healing_paused=old.healing_paused)
            await self.put_access(record)

    async def put_access(self, record: AccessRecord) -> AccessRecord:
        await self._runner.call(self._runner.store.put_access, record)
        self.access[record.drone_id] = record
        return record

    def access_of(self, drone_id: str) -> AccessRecord:
        return self.access.get(drone_id) or AccessRecord(drone_id)

    def drone_type(self, state: DroneState) -> str:
        return self.access_of(state.id).drone_type or state.drone_type or "unknown"

    # -- the ladder ----------------------------------------------------------

    def ladder(self, drone_id: str) -> Ladder:
        ladder = self._ladders.get(drone_id)
        if ladder is None:
            ladder = self._ladders[drone_id] = Ladder(drone_id)
        return ladder

    # -- the startup grace -----------------------------------------------------

    def startup_grace_until(self, now: float) -> float | None:
        """When the startup grace ends at the latest, while it lasts; None once over."""
        if not self._awaited:
            return None
        until = self._started_at + self.settings.startup_grace
        return until if now < until else None

    def startup_grace(self, now: float) -> StartupGrace | None:
        """The startup grace while it lasts: until when at the latest, and who is awaited."""
        until = self.startup_grace_until(now)
        if until is None:
            return None
        names = sorted(s.name for s in self._fleet.states() if s.id in self._awaited)
        return StartupGrace(until, tuple(names))

    def _end_startup_grace(self, states: Sequence[DroneState], now: float) -> None:
        if self._grace_over:
            return
        # A drone that connected before our watcher was registered is back too.
        self._awaited.difference_update(s.id for s in states if s.link is not None)
        if not self._awaited:
            self._grace_over = True
            log.info("startup grace over after %.1fs: every known drone is back", now - self._started_at)
        elif now >= self._started_at + self.settings.startup_grace:
            self._grace_over = True
            names = sorted(s.name for s in states if s.id in self._awaited)
            log.info(
                "startup grace over after %gs; not back: %s",
                self.settings.startup_grace,
                ", ".join(names[:20]) + (" ..." if len(names) > 20 else ""),
            )
            self._awaited.clear()

    def tick(self, now: float) -> None:
        """Open, climb and close incidents. Only the watched drones (in the
        fleet's order) are looked at: one that is well, with no incident and
        no strikes, needs nothing until its status changes again."""
        fleet = self._fleet
        if not self._grace_over:
            self._end_startup_grace(fleet.states(), now)
        watched = self._watched
        states = [state for state in fleet.states() if state.id in watched]
        watched.intersection_update(state.id for state in states)  # forgotten drones
        for state in states:
            ladder = self.ladder(state.id)
            sick = state.status in SICK
            if sick and ladder.incident is None:
                if state.id in self._awaited:
                    continue  # not back since we started: the startup grace first
                self._open(state, ladder, now)
            elif not sick and ladder.incident is not None and proven(state):
                self._recovered(state, ladder, now)
            elif ladder.incident is None and ladder.strikes and ladder.healthy_since is not None:
                healthy = now - ladder.healthy_since  # (not sick, or the first branch had it)
                if healthy >= self.settings.cooloff_reset:
                    ladder.strikes = 0
                    ladder.note(now, f"healthy for {healthy:.0f}s: the cool-off starts over")
            if ladder.incident is None and not ladder.strikes and state.status not in SICK:
                watched.discard(state.id)
        self._watch_dark(len(fleet), states, now)
        for state in states:
            ladder = self._ladders[state.id]
            if ladder.incident is not None:
                self._maybe_act(state, ladder, now)

    def _open(self, state: DroneState, ladder: Ladder, now: float) -> None:
        detected = min(self._status_changed_at.get(state.id, now), now)
        if state.status == SUSPECT:
            # Silent: it broke around its last heartbeat.
            failed = min(state.last_heartbeat_at or detected, detected)
            reason = "stopped sending heartbeats"
        elif state.status == OFFLINE:
            failed = detected  # a stream cut is seen at once
            reason = "its control stream ended"
        else:
            failed = detected
            reason = "failing a functional check"
        if detected < self._started_at:
            detected = failed = now
        ladder.incident = IncidentRecord(
            "i-" + secrets.token_hex(6), state.id, state.status, reason, failed, detected
        )
        ladder.level, ladder.asked = 0, None
        ladder.healthy_since = None
        first, ladder.waiting_for = detected + self.settings.grace, "grace"
        cooloff = self.settings.backoff(ladder.strikes)
        note = f"{state.status}: {reason}"
        if ladder.last_action_at and ladder.last_action_at + cooloff > first:
            first, ladder.waiting_for = ladder.last_action_at + cooloff, "cool-off"
            note += (
                f"; first step in {first - now:.1f}s: a {cooloff:g}s cool-off after the last action "
                f"({ladder.strikes} incident(s) in a row needed one)"
            )
        ladder.next_action_at = first
        ladder.note(now, note)
        self._dirty.add(state.id)
        if self._metrics is not None:
            self._metrics.incidents.labels(state.status).inc()

    def _recovered(self, state: DroneState, ladder: Ladder, now: float) -> None:
        incident = ladder.incident
        assert incident is not None
        level = ladder.level
        outcome = "recovered by itself" if level == 0 else f"recovered after {STEPS[min(level, ALERT)]}"
        closed = replace(incident, recovered_at=now, level=level, outcome=outcome)
        ladder.incident = None
        ladder.level, ladder.asked = 0, None
        ladder.healthy_since = now
        ladder.note(now, f"{outcome} in {now - incident.failed_at:.1f}s")
        self._closed.append(closed)
        self._dirty.add(state.id)
        if level:
            self._events.emit(
                "drone_recovered",
                f"{state.name} {outcome}, {now - incident.failed_at:.1f}s after it failed",
                drone_id=state.id,
                drone_name=state.name,
                incident_id=incident.id,
                level=level,
                detection_s=round(incident.detected_at - incident.failed_at, 3),
                recovery_s=round(now - incident.failed_at, 3),
            )

    def _watch_dark(self, size: int, states: Sequence[DroneState], now: float) -> None:
        """``states``: every sick drone among them, of a fleet of ``size``."""
        limit = self.settings.dark_share * size
        sick = [s for s in states if s.status in SICK]
        if self.dark or self._dark_overridden:
            if len(sick) <= limit:
                if self.dark:
                    self._events.emit(
                        "fleet_dark_cleared",
                        f"{size - len(sick)} of {size} drones are back: healing resumes",
                        sick=len(sick),
                        fleet=size,
                    )
                    # The rest may be on their way back too: a fresh grace period.
                    for drone in sick:
                        ladder = self._ladders[drone.id]
                        ladder.next_action_at = max(ladder.next_action_at, now + self.settings.grace)
                self.dark = self._dark_overridden = False
            return
        if size < self.settings.dark_min_fleet:
            return
        recent = [
            s
            for s in sick
            if (incident := self._ladders[s.id].incident) is not None
            and now - incident.detected_at <= self.settings.dark_window
        ]
        if len(recent) > limit:
            self.dark = True
            self._events.emit(
                "fleet_dark",
                f"{len(recent)} of {size} drones went dark within {self.settings.dark_window:.0f}s: "
                "assuming the controller's own network is at fault; no healing until they are back",
                sick=len(sick),
                fleet=size,
                drones=[s.name for s in recent][:50],
            )

    def _maybe_act(self, state: DroneState, ladder: Ladder, now: float) -> None:
        if ladder.acting or ladder.exhausted or self.dark or self.paused or state.status not in SICK:
            return  # (not sick: back, and about to prove it)
        if state.id in self._awaited:
            return  # an incident from before the start: the startup grace first
        if self.access_of(state.id).healing_paused or now < ladder.next_action_at:
            return
        if ladder.level and now < ladder.step_deadline and not self._unheard(state, ladder, now):
            return
        if self._enrolled is not None and not self._enrolled(state.id):
            return  # revoked or expired: nothing to heal, it may not come back
        if self._manual_pending(state, ladder, now):
            return  # an admin's action first: its outcome decides whether a step is needed
        if self._spend(now) is not None:
            if not self._throttled:
                self._throttled = True
                self._events.emit(
                    "healing_throttled",
                    f"{self.settings.max_actions} healing actions in {self.settings.action_window:.0f}s: "
                    "holding back",
                )
            return
        self._throttled = False
        ladder.acting = True
        ladder.running = f"the healer's {STEPS[ladder.level + 1]}"
        if ladder.level == 0:
            ladder.strikes += 1  # the first action of an incident: the next one backs off longer
        ladder.level += 1
        self._actions.spawn(self._climb(state, ladder), f"heal:{state.name}")

    def _spend(self, now: float) -> str | None:
        """Count an action against the budget, or say why the budget has none left."""
        recent = self._recent_actions
        window = self.settings.action_window
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= self.settings.max_actions:
            return (
                f"the healing budget is spent ({self.settings.max_actions} actions within {window:g}s, "
                f"--heal-max-actions); the next is possible in {recent[0] + window - now:.0f}s"
            )
        recent.append(now)
        return None

    def _manual_pending(self, state: DroneState, ladder: Ladder, now: float) -> bool:
        """An admin's action is still waiting for its drone: not back with a
        fresh agent process, within the step's timeout, and (asked over the
        control stream) the agent has not ignored it."""
        if not ladder.manual:
            return False
        fresh = state.instance_id and state.instance_id != ladder.manual_instance
        back = state.link is not None and bool(fresh)
        if back or now >= ladder.manual_until or self._unheard(state, ladder, now, manual=True):
            ladder.manual = ""
            return False
        return True

    def busy(self, state: DroneState, now: float) -> str | None:
        """Why no other action may start on the drone now, or None if one may."""
        ladder = self.ladder(state.id)
        if ladder.acting:
            return f"{ladder.running} is running"
        if self._manual_pending(state, ladder, now):
            until = iso(ladder.manual_until)
            return f"{ladder.manual} is under way (the drone has until {until} to come back)"
        if (
            ladder.incident is not None
            and ladder.level
            and not ladder.exhausted
            and now < ladder.step_deadline
            and not self._unheard(state, ladder, now)
        ):
            return (
                f"the healer's {STEPS[ladder.level]} is under way "
                f"(the drone has until {iso(ladder.step_deadline)} to come back)"
            )
        return None

    async def _climb(self, state: DroneState, ladder: Ladder) -> None:
        try:
            while True:
                result = await self.run_step(state, ladder.level, "healing ladder")
                ladder.note(self._clock.time(), f"{STEPS[result.level]}: {result.detail}")
                if result.done or ladder.level >= ALERT:
                    break
                ladder.level += 1  # this step cannot run here: the next one, now
            now = self._clock.time()
            ladder.last_action_at = now
            ok = result.command is None or result.command.ok
            ladder.step_deadline = now + (self.settings.step_timeout(ladder.level) if ok else 0.0)
            if ladder.incident is not None:
                ladder.incident = replace(ladder.incident, level=ladder.level)
                self._dirty.add(state.id)
        finally:
            ladder.acting = False
            self._wake.set()

    @staticmethod
    def _unheard(state: DroneState, ladder: Ladder, now: float, manual: bool = False) -> bool:
        """Step 1 went over the control stream, and that stream is still up
        well after: the agent did not act on it (a frozen agent cannot read
        it), so the step failed without waiting out its timeout."""
        return (
            (manual or ladder.level == RESTART)
            and ladder.asked is not None
            and state.link is ladder.asked
            and now >= ladder.asked_until
        )

    # -- steps ---------------------------------------------------------------

    def _values(self, state: DroneState, record: AccessRecord) -> dict[str, str]:
        return {"name": state.name, "drone_id": state.id, "vmid": record.vmid, "host": record.host}

    def _argv(self, target: str, command: str) -> list[str]:
        if target == oob_access.LOCAL:
            return ["sh", "-c", command]
        return ssh_argv(SshTarget.parse(target), self.settings.ssh, command)

    async def _remote(
        self, target: str, template: str, state: DroneState, record: AccessRecord
    ) -> CommandResult:
        command = CommandTemplate.parse(template).render(self._values(state, record))
        return await run(self._argv(target, command), self.settings.command_timeout)

    async def run_step(self, state: DroneState, level: int, why: str) -> StepResult:
        """Take one step for the drone now; the event says what happened."""
        record = self.access_of(state.id)
        command: CommandResult | None = None
        unable = False
        try:
            if level == RESTART and state.status == SUSPECT:
                # Silent: its event loop is not running, so it reads no stream and a
                # polite restart waits on a SIGTERM it cannot act on.
                result = StepResult(level, False, "skipped: the agent is not responding; a hard restart next")
            elif level == RESTART and state.link is not None:
                sent = state.link.restart_service(f"{why}: {state.status}")
                ladder = self.ladder(state.id)
                ladder.asked, ladder.asked_until = state.link, self._clock.time() + RESTART_ACK
                result = StepResult(
                    level, sent, "asked the agent over its control stream" if sent else "control stream full"
                )
            elif level in (RESTART, HARD_RESTART):
                if not record.ssh:
                    result = StepResult(level, False, "skipped: no SSH target configured")
                else:
                    template = (
                        self.settings.restart_command
                        if level == RESTART
                        else self.settings.hard_restart_command
                    )
                    command = await self._remote(record.ssh, template, state, record)
                    result = StepResult(level, True, command.summary(), command)
            elif level == REBOOT:
                kind = self.drone_type(state)
                if kind not in oob_access.REBOOTABLE:
                    result = StepResult(level, False, f"skipped: a {kind} drone is never rebooted")
                elif not (record.host and record.reboot):
                    result = StepResult(
                        level, False, "skipped: no hypervisor host or reboot command configured"
                    )
                else:
                    template = reboot_template(record.reboot).text
                    command = await self._remote(record.host, template, state, record)
                    result = StepResult(level, True, command.summary(), command)
            else:
                self._alert(state, why)
                result = StepResult(ALERT, True, "alerted the admin")
        except (InvalidArgument, SwarmError) as exc:
            result = StepResult(level, True, f"cannot run: {exc.message}")
            unable = True
        if self._metrics is not None:
            failed = unable or (command is not None and not command.ok)
            self._metrics.heal_action(STEPS[level], heal_result(result.done, failed))
        data: dict[str, Any] = {"step": STEPS[level], "level": level, "why": why, "done": result.done}
        if command is not None:
            data |= {
                "exit_code": command.exit_code,
                "output": command.output[-2000:],
                "duration_s": round(command.duration, 3),
                "timed_out": command.timed_out,
            }
        self._events.emit(
            "heal_action",
            f"{state.name}: {STEPS[level]}: {result.detail}",
            drone_id=state.id,
            drone_name=state.name,
            **data,
        )
        return result

    def _alert(self, state: DroneState, why: str) -> None:
        ladder = self._ladders.get(state.id)
        incident = ladder.incident if ladder is not None else None
        message = f"{state.name} is {state.status} and the healer could not bring it back"
        self._events.emit("drone_alert", message, drone_id=state.id, drone_name=state.name, why=why)
        self._alerter.alert(
            {
                "type": "drone_alert",
                "message": message,
                "drone": {
                    "id": state.id,
                    "name": state.name,
                    "status": state.status,
                    "type": self.drone_type(state),
                },
                "incident": None
                if incident is None
                else {
                    "id": incident.id,
                    "kind": incident.kind,
                    "reason": incident.reason,
                    "failed_at": iso(incident.failed_at),
                },
                "at": iso(self._clock.time()),
            }
        )

    # -- admin -----------------------------------------------------------------

    async def restart(self, state: DroneState, by: str) -> StepResult:
        return await self._manual(state, RESTART, by)

    async def reboot(self, state: DroneState, by: str) -> StepResult:
        kind = self.drone_type(state)
        if kind not in oob_access.REBOOTABLE:
            raise FailedPrecondition(f"{state.name} is a {kind} drone: only lxc and qemu drones are rebooted")
        record = self.access_of(state.id)
        if not (record.host and record.reboot):
            raise FailedPrecondition(
                f"{state.name} has no hypervisor host or reboot command: "
                "set them with PUT /admin/api/drones/{name}"
            )
        return await self._manual(state, REBOOT, by)

    async def _manual(self, state: DroneState, level: int, by: str) -> StepResult:
        """An admin's step, serialized with the healer's own and counted
        against the same budget: FailedPrecondition (409) if it cannot run now."""
        now = self._clock.time()
        ladder = self.ladder(state.id)
        busy = self.busy(state, now)
        if busy is not None:
            raise FailedPrecondition(f"{state.name}: {busy}; one action at a time per drone")
        spent = self._spend(now)
        if spent is not None:
            raise FailedPrecondition(f"{state.name}: not now: {spent}")
        what = f"{STEPS[level]} asked by {by}"
        instance = state.instance_id
        ladder.acting, ladder.running, ladder.asked = True, f"a {what}", None
        try:
            result = await self.run_step(state, level, what)
        finally:
            ladder.acting = False
            self._wake.set()
        if result.done and (result.command is None or result.command.ok):
            # Under way until the drone is back with a fresh agent, or the step's timeout.
            ladder.manual, ladder.manual_instance = f"a {what}", instance
            ladder.manual_until = self._clock.time() + self.settings.step_timeout(level)
        return result

    async def set_paused(self, paused: bool, by: str, drone: DroneState | None = None) -> None:
        if drone is None:
            await self._runner.call(self._runner.store.set_setting, PAUSED_KEY, "1" if paused else "0")
            self.paused = paused
            what = "fleet"
        else:
            await self.put_access(replace(self.access_of(drone.id), healing_paused=paused))
            what = drone.name
        self._events.emit(
            "healing_paused" if paused else "healing_resumed",
            f"healing {'paused' if paused else 'resumed'} for {what} by {by}",
            drone_id=drone.id if drone else None,
            drone_name=drone.name if drone else None,
            by=by,
        )
        self._wake.set()

    def override_dark(self, by: str) -> bool:
        if not self.dark:
            return False
        self.dark, self._dark_overridden = False, True
        self._events.emit(
            "fleet_dark_overridden", f"healing goes on although the fleet is dark: {by} says so", by=by
        )
        self._wake.set()
        return True

    async def incidents(self, drone_id: str, limit: int) -> list[IncidentRecord]:
        """The drone's incidents, newest first."""
        return await self._runner.call(self._runner.store.list_incidents, drone_id=drone_id, limit=limit)

    @property
    def has_webhook(self) -> bool:
        """Whether alerts also go to a webhook."""
        return bool(self._alerter.url)

    def status(self, state: DroneState, now: float) -> DroneHealth:
        """The drone's health for the admin: ladder, next action, history."""
        ladder = self.ladder(state.id)
        record = self.access_of(state.id)
        incident = ladder.incident
        grace_until = self.startup_grace_until(now) if state.id in self._awaited else None
        next_action: NextAction | None = None
        if incident is not None and not ladder.exhausted:
            at = max(ladder.next_action_at, ladder.step_deadline if ladder.level else 0.0)
            waiting_for = "step timeout" if ladder.level else ladder.waiting_for
            if grace_until is not None:
                at, waiting_for = max(at, grace_until), "startup grace"
            held = (
                "healing paused"
                if self.paused or record.healing_paused
                else "fleet dark"
                if self.dark
                else "running"
                if ladder.acting
                else ""
            )
            next_action = NextAction(STEPS[ladder.level + 1], ladder.level + 1, at, waiting_for, held)
        cooloff = self.settings.backoff(ladder.strikes)
        resets_at = (
            ladder.healthy_since + self.settings.cooloff_reset
            if ladder.strikes and ladder.healthy_since is not None
            else None
        )
        return DroneHealth(
            drone=state.name,
            id=state.id,
            status=state.status,
            type=self.drone_type(state),
            access=record,
            healing_paused=self.paused or record.healing_paused,
            fleet_dark=self.dark,
            level=ladder.level,
            step=STEPS.get(ladder.level, "none"),
            exhausted=ladder.exhausted,
            incident=incident,
            next_action=next_action,
            cooloff=Cooloff(
                incidents_in_a_row=ladder.strikes,
                current=cooloff,
                last_action_at=ladder.last_action_at or None,
                until=ladder.last_action_at + cooloff if ladder.last_action_at and cooloff else None,
                resets_at=resets_at,
            ),
            startup_grace_until=grace_until,
            busy=self.busy(state, now),
            history=tuple(ladder.history),
        )

    def figures(self) -> FleetFigures | None:
        """Fleet availability and mean time to recovery over the last day,
        from memory (None before the first computation succeeded).

        /api/v1/health answers from memory whatever the database does: the
        healer's loop computes the figures again after FIGURES_TTL seconds,
        and as soon as an incident is written."""
        cached = self._figures
        if cached is None:
            return None
        return replace(cached[1], healing_paused=self.paused, fleet_dark=self.dark)

    async def _refresh_figures(self) -> None:
        now = self._clock.time()
        cached = self._figures
        if cached is not None and not self._figures_due and 0 <= now - cached[0] < FIGURES_TTL:
            return
        self._figures_due = False
        try:
            self._figures = (now, await self._day_figures(now))
        except StoreUnavailable:
            self._figures_due = True  # the older figures stay until the database is back

    async def _day_figures(self, now: float) -> FleetFigures:
        since = now - DAY
        incidents = await self._runner.call(self._runner.store.list_incidents, since=since, limit=100_000)
        states = {s.id: s for s in self._fleet.states()}
        watched = 0.0
        down = 0.0
        for state in states.values():
            watched += now - max(since, state.first_seen_at)
        recoveries: list[float] = []
        detections: list[float] = []
        for incident in incidents:
            drone = states.get(incident.drone_id)
            if drone is None:
                continue
            start = max(since, drone.first_seen_at, incident.failed_at)
            end = incident.recovered_at if incident.recovered_at is not None else now
            down += max(0.0, end - start)
            detections.append(incident.detected_at - incident.failed_at)
            if incident.recovered_at is not None:
                recoveries.append(incident.recovered_at - incident.failed_at)
        return FleetFigures(
            window_s=DAY,
            availability=round(1 - down / watched, 6) if watched > 0 else None,
            incidents=len(incidents),
            open_incidents=sum(1 for i in incidents if i.recovered_at is None),
            mttr_s=round(sum(recoveries) / len(recoveries), 3) if recoveries else None,
            mean_detection_s=round(sum(detections) / len(detections), 3) if detections else None,
        )


def proven(state: DroneState) -> bool:
    """Online, and the agent on this stream answered a ping (whose checks
    would have made it unhealthy): a healthy sign from the current process."""
    return (
        state.status == ONLINE
        and state.connected_at is not None
        and state.last_pong_at is not None
        and state.last_pong_at >= state.connected_at
    )
