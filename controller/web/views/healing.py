"""Views of the healer: out-of-band access, a drone's ladder and incidents,
manual steps and the fleet-wide holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from swarm.clock import iso
from swarm.controller.healer import (
    HARD_RESTART,
    REBOOT,
    RESTART,
    STEPS,
    DroneHealth,
    Healer,
    StartupGrace,
    StepResult,
)
from swarm.controller.store.records import AccessRecord, EventRecord, IncidentRecord
from swarm.controller.web.views.base import Doc, Range, Timestamp
from swarm.controller.web.views.fleet import DroneType

Count = Annotated[int, Range(0)]
Seconds = Annotated[float, Range(0)]


@dataclass(frozen=True, slots=True)
class AccessView:
    """How to reach a drone out of band, as the admin set it."""

    drone_id: str
    type: Annotated[DroneType | Literal[""], Doc("overrides the type the drone reports; empty keeps it")]
    ssh: Annotated[str, Doc("[user@]host[:port] of the drone, or 'local'")]
    host: Annotated[str, Doc("[user@]host[:port] of its hypervisor host")]
    vmid: str
    reboot: Annotated[str, Doc("proxmox-lxc, proxmox-qemu, lxc, libvirt or a command template")]
    healing_paused: bool
    updated_at: Annotated[float, Doc("seconds since the epoch (0: never)")]
    updated_by: str


def access_view(record: AccessRecord) -> AccessView:
    return AccessView(
        record.drone_id,
        record.drone_type,  # type: ignore[arg-type]
        record.ssh,
        record.host,
        record.vmid,
        record.reboot,
        record.healing_paused,
        record.updated_at,
        record.updated_by,
    )


@dataclass(frozen=True, slots=True)
class AccessSettingsView:
    """The settings an admin gives (the body of PUT /admin/api/drones/{name}), as the
    drone_access_changed event records them."""

    type: Annotated[DroneType | Literal[""], Doc("overrides the type the drone reports; empty keeps it")]
    ssh: str
    host: str
    vmid: str
    reboot: str


def access_settings_view(record: AccessRecord) -> AccessSettingsView:
    return AccessSettingsView(
        record.drone_type,  # type: ignore[arg-type]
        record.ssh,
        record.host,
        record.vmid,
        record.reboot,
    )


@dataclass(frozen=True, slots=True)
class AccessReply:
    drone: str
    access: AccessView


@dataclass(frozen=True, slots=True)
class IncidentView:
    """One stretch of a drone being down or unhealthy, and how it ended."""

    id: str
    kind: Literal["offline", "suspect", "unhealthy"]
    reason: str
    failed_at: Timestamp
    detected_at: Timestamp
    recovered_at: Timestamp
    detection_s: float
    recovery_s: float | None
    level: Annotated[int, Doc("the last healing step taken")]
    step: str
    outcome: str


def incident_view(incident: IncidentRecord) -> IncidentView:
    return IncidentView(
        id=incident.id,
        kind=incident.kind,  # type: ignore[arg-type]
        reason=incident.reason,
        failed_at=iso(incident.failed_at),
        detected_at=iso(incident.detected_at),
        recovered_at=iso(incident.recovered_at),
        detection_s=round(incident.detected_at - incident.failed_at, 3),
        recovery_s=None
        if incident.recovered_at is None
        else round(incident.recovered_at - incident.failed_at, 3),
        level=incident.level,
        step=STEPS.get(incident.level, "none"),
        outcome=incident.outcome,
    )


@dataclass(frozen=True, slots=True)
class NextActionView:
    step: str
    level: int
    at: Timestamp
    waiting_for: str
    held: Annotated[
        str, Doc("why it would not run now (healing paused, fleet dark, running); empty: it would")
    ]


@dataclass(frozen=True, slots=True)
class CooloffView:
    incidents_in_a_row: Count
    current_s: Seconds
    last_action_at: Timestamp
    until: Timestamp
    resets_at: Timestamp


@dataclass(frozen=True, slots=True)
class NoteView:
    at: Timestamp
    what: str


@dataclass(frozen=True, slots=True)
class HealEventView:
    ts: Annotated[float, Doc("seconds since the epoch")]
    type: str
    message: str


@dataclass(frozen=True, slots=True)
class DroneHealthView:
    """A drone's ladder level, next action and what it waits for, cool-off,
    health history and incidents."""

    drone: str
    id: str
    status: Literal["online", "unhealthy", "suspect", "offline"]
    type: DroneType
    access: AccessView
    healing_paused: bool
    fleet_dark: bool
    level: int
    step: str
    exhausted: bool
    incident: IncidentView | None
    next_action: NextActionView | None
    cooloff: Annotated[CooloffView, Doc("why a new incident would wait: the drone's backoff")]
    startup_grace_until: Annotated[Timestamp, Doc("not back since the start: not healed before this")]
    busy: Annotated[str | None, Doc("why an admin's restart or reboot would be refused now (409)")]
    history: tuple[NoteView, ...]
    incidents: Annotated[tuple[IncidentView, ...], Doc("newest first")]
    events: tuple[HealEventView, ...]


def drone_health_view(
    h: DroneHealth, incidents: list[IncidentRecord], events: list[EventRecord]
) -> DroneHealthView:
    nxt = h.next_action
    c = h.cooloff
    return DroneHealthView(
        drone=h.drone,
        id=h.id,
        status=h.status,  # type: ignore[arg-type]
        type=h.type,  # type: ignore[arg-type]
        access=access_view(h.access),
        healing_paused=h.healing_paused,
        fleet_dark=h.fleet_dark,
        level=h.level,
        step=h.step,
        exhausted=h.exhausted,
        incident=None if h.incident is None else incident_view(h.incident),
        next_action=None
        if nxt is None
        else NextActionView(nxt.step, nxt.level, iso(nxt.at), nxt.waiting_for, nxt.held),
        cooloff=CooloffView(
            c.incidents_in_a_row, c.current, iso(c.last_action_at), iso(c.until), iso(c.resets_at)
        ),
        startup_grace_until=iso(h.startup_grace_until),
        busy=h.busy,
        history=tuple(NoteView(iso(n.at), n.what) for n in h.history),
        incidents=tuple(incident_view(i) for i in incidents),
        events=tuple(HealEventView(e.ts, e.type, e.message) for e in events),
    )


@dataclass(frozen=True, slots=True)
class StepView:
    """A healing step an admin asked for; the command's fields are null when none ran."""

    drone: str
    level: int
    done: Annotated[bool, Doc("the step ran (its success is still to be seen)")]
    detail: str
    exit_code: int | None
    output: str | None
    duration_s: float | None
    timed_out: bool | None


def step_view(drone: str, result: StepResult) -> StepView:
    command = result.command
    return StepView(
        drone,
        result.level,
        result.done,
        result.detail,
        None if command is None else command.exit_code,
        None if command is None else command.output,
        None if command is None else round(command.duration, 3),
        None if command is None else command.timed_out,
    )


@dataclass(frozen=True, slots=True)
class HealerSettingsView:
    grace_s: Seconds
    step_timeouts_s: Annotated[dict[str, float], Doc("seconds per step: restart, hard restart, reboot")]
    cooloff_s: Seconds
    cooloff_max_s: Seconds
    cooloff_reset_s: Seconds
    startup_grace_s: Seconds
    dark_share: Annotated[float, Range(0, 1)]
    dark_window_s: Seconds
    max_actions: Count
    action_window_s: Seconds
    restart_command: str
    hard_restart_command: str
    webhook: Annotated[bool, Doc("alerts also go to a webhook")]


@dataclass(frozen=True, slots=True)
class StartupGraceView:
    until: Timestamp
    awaiting: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HealingView:
    """Whether healing is paused or held by a dark fleet."""

    paused: bool
    fleet_dark: bool
    paused_drones: tuple[str, ...]
    settings: HealerSettingsView
    startup_grace: Annotated[
        StartupGraceView | None,
        Doc("while drones known before the start are awaited (none of them is healed yet); null once over"),
    ]


def healing_view(healer: Healer, paused_drones: list[str], grace: StartupGrace | None) -> HealingView:
    s = healer.settings
    return HealingView(
        paused=healer.paused,
        fleet_dark=healer.dark,
        paused_drones=tuple(paused_drones),
        settings=HealerSettingsView(
            grace_s=s.grace,
            step_timeouts_s={
                STEPS[level]: s.step_timeout(level) for level in (RESTART, HARD_RESTART, REBOOT)
            },
            cooloff_s=s.cooloff,
            cooloff_max_s=s.cooloff_max,
            cooloff_reset_s=s.cooloff_reset,
            startup_grace_s=s.startup_grace,
            dark_share=s.dark_share,
            dark_window_s=s.dark_window,
            max_actions=s.max_actions,
            action_window_s=s.action_window,
            restart_command=s.restart_command,
            hard_restart_command=s.hard_restart_command,
            webhook=healer.has_webhook,
        ),
        startup_grace=None if grace is None else StartupGraceView(iso(grace.until), grace.awaiting),
    )
